"""`ds2hub lm`: building n-gram language models (`lm build`) and tuning their decoding weights
(`lm tune`)."""
