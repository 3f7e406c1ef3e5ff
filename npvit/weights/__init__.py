"""Models shipped inside the package, found by name: ``npvit.load("digits")``.

digits.npz  a 28k-parameter ViT trained by npvit itself on scikit-learn's 8x8 digits (float16
            weights, npvit's own .npz).  Input: a picture of one white digit on a black background
            that the digit fills; labels "0".."9".  Reproduce it with the command in
            docs/training.md (recipe: npvit/train/recipes.py).
"""
