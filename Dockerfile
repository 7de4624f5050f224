# mer in a container: installs the project with every extra and runs the demo.
# Build: docker build -t mer .   Run: docker run --rm -v $PWD/mer-cache:/cache mer
FROM python:3.11-slim

WORKDIR /opt/mer
COPY . .

# torch first, pinned to a CPU build, so nothing pulls a multi-GB CUDA wheel.
RUN pip install --no-cache-dir torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu \
 && pip install --no-cache-dir '.[all]' \
 && pip install --no-cache-dir --no-deps Resemblyzer

ENV MER_CACHE=/cache
VOLUME /cache
ENTRYPOINT ["mer"]
CMD ["demo"]
