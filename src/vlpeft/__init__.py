"""vlpeft: parameter-efficient fine-tuning of mPLUG on COCO Caption and VQAv2, as a reproducible study."""

__version__ = "0.1.0"
