"""mmar.evaluation"""
