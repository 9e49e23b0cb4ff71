"""mmar.training"""
