"""mmar.model"""
