"""mailmoat.spool"""
