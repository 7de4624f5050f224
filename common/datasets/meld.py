"""(adapter being written)"""
