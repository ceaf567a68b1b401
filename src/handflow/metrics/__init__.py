"""handflow.metrics"""
