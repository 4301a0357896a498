"""Delivery outcomes that are not success: temporary (retry) or permanent (bounce)."""


class DeliveryError(Exception):
    """A delivery attempt failed; `code` and `text` are what the remote (or we) said."""

    permanent = False

    def __init__(self, code: int, text: str, *, enhanced: str = "") -> None:
        super().__init__(f"{code} {enhanced + ' ' if enhanced else ''}{text}")
        self.code = code
        self.enhanced = enhanced
        self.text = text


class TemporaryFailure(DeliveryError):
    """Try again later (4xx, connection trouble, DNS timeout, disk full)."""


class PermanentFailure(DeliveryError):
    """Give up and tell the sender (5xx, no such domain, null MX)."""

    permanent = True
