"""handflow.render"""
