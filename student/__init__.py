"""Student: the small U-Net with a hard and a soft (temperature) output."""
