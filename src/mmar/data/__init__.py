"""mmar.data"""
