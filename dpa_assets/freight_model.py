"""The freight movement record as the freight system sends it, and the UIC wagon-number rule.

One place names the raw columns so the generator, the landing reader and the validator agree.
"""

from __future__ import annotations

RAW_COLUMNS = (
    "shipment_id",
    "waybill_number",
    "wagon_number",
    "origin_station",
    "destination_station",
    "commodity",
    "net_tonnage",
    "wagon_count",
    "departure_time",
    "arrival_time",
    "customer",
    "revenue_xaf",
)


def luhn_check_digit(payload: str) -> int:
    """The Luhn check digit for a string of digits (UIC uses it over the first 11 digits).

    Args:
        payload: digits only, without the check digit.

    Returns:
        The digit 0-9 that completes ``payload``.
    """
    total = 0
    # Doubling starts from the rightmost payload digit, as in every Luhn variant.
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def is_valid_uic_number(value: str) -> bool:
    """True for 12 digits whose last digit is the Luhn check digit of the first 11."""
    return len(value) == 12 and value.isascii() and value.isdigit() and luhn_check_digit(value[:11]) == int(value[11])
