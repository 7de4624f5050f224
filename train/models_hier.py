"""(fusion models being written)"""
