"""Small reusable networks (edge nets, students)."""

from multiteacher.models.unet import UNet

__all__ = ["UNet"]
