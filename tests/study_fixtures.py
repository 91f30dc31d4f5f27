"""What the SGNS questions' hand-made results share: the seeds and the run's setup record."""

SEEDS = [0, 1, 2]
SETUP = {"corpus": "wiki", "n_docs": 20, "n_tokens": 12345, "vocab_size": 200, "min_count": 5,
         "dim": 32, "window": 5, "negative": 5, "sample": 0.001, "epochs": 2, "lr": 0.025,
         "seeds": SEEDS, "protocol": {"ws353_pairs": 40, "simlex_pairs": 30, "ws353_oov": 313,
                                      "simlex_oov": 969, "3cosadd_answered": 50,
                                      "3cosadd_oov": 19494}}
