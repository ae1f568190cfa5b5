"""Publishing: a checkpoint as a Hugging Face Hub folder with its model card, and the upload."""
