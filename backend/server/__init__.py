"""The backend's HTTP side: Flask routes of Label Studio's ML-backend contract."""
