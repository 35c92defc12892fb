"""Mail coming in: bytes to ParsedMail, automatic-mail verdicts, the IMAP session and the store-first intake.
"""
