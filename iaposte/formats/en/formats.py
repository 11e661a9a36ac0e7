"""English dates as Django writes them, on a 24-hour clock with seconds (as the logs are)."""

DATETIME_FORMAT = "N j, Y, H:i:s"
SHORT_DATETIME_FORMAT = "m/d/Y H:i:s"
TIME_FORMAT = "H:i:s"
