"""handflow.models"""
