"""Small pure `keras.ops` functions shared by algorithms."""
