"""handflow.training"""
