"""Writes the .npy detection patterns of head-scores --pattern tests with numpy.save (run with /usr/bin/python3)."""
import numpy as np

n = 7  # "the cat sat on the mat" with BOS, GPT-2's tokenizer
prev = np.zeros((n, n))
for i in range(1, n):
    prev[i, i - 1] = 1.0
np.save("previous_token_7.npy", prev)                        # float64 '<f8'
np.save("previous_token_7_f32.npy", prev.astype(np.float32))  # float32 '<f4'
upper = prev.copy()
upper[0, 3] = 0.5
np.save("upper_7.npy", upper)
np.save("previous_token_7_int64.npy", prev.astype(np.int64))
np.save("vector_7.npy", np.ones(n))
