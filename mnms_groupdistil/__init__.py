"""GroupDistil: group distributionally robust knowledge distillation for MONAI."""

__version__ = "0.1.0"
