"""(extractor being written)"""
