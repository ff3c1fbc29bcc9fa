"""mailmoat.smtp"""
