"""Training: the LightningModule (`DeepSpeech2Task`), the data pipeline over Hugging Face
`datasets`, augmentation, callbacks, loggers, schedules and fine-tuning."""
