"""mmar.generation"""
