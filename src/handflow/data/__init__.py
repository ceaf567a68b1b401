"""handflow.data"""
