"""mmar.tokenizers"""
