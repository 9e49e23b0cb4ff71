"""mmar.diffusion"""
