"""The running desk: the desk process, the fetch and send processes, systemd.
"""
