"""Mail going out: the queue (rows, limits, suppressions), templates to bytes, SMTP, results.
"""
