"""Hand-made segmentation cases shared by the tests; the values are worked out in the comments."""

import torch

# Binary hand case, three 2x3 images (probabilities):
#   image 0: probs [[.9 .8 .1] [.2 .7 .4]] -> pred [[1 1 0] [0 1 0]], target [[1 0 0] [1 1 0]]
#            tp 2 ((0,0), (1,1)), fp 1 ((0,1)), fn 1 ((1,0)), tn 2   -> IoU 2/4, Dice 4/6
#   image 1: all probs .1 (pred empty), target empty: tp fp fn 0, tn 6 -> IoU 1, Dice 1 (empty/empty rule)
#   image 2: probs [[.6 .6 .6] [.6 .1 .1]], target [[0 0 0] [0 0 1]]: tp 0, fp 4, fn 1, tn 1 -> IoU 0, Dice 0
#   micro: tp 2, fp 5, fn 2 -> IoU 2/9, Dice 4/11; per image: IoU (1/2 + 1 + 0)/3 = 1/2, Dice (2/3 + 1 + 0)/3 = 5/9
BINARY_PROBS = torch.tensor(
    [
        [[0.9, 0.8, 0.1], [0.2, 0.7, 0.4]],
        [[0.1, 0.1, 0.1], [0.1, 0.1, 0.1]],
        [[0.6, 0.6, 0.6], [0.6, 0.1, 0.1]],
    ]
)
BINARY_TARGET = torch.tensor(
    [
        [[1, 0, 0], [1, 1, 0]],
        [[0, 0, 0], [0, 0, 0]],
        [[0, 0, 0], [0, 0, 1]],
    ]
)

# Multi-class hand case, one 2x3 image, 4 classes (class 3 absent everywhere), 255 ignored:
#   target [[0 0 1] [2 255 1]], pred [[0 1 1] [2 2 0]]; valid (target, pred) pairs: (0,0) (0,1) (1,1) (2,2) (1,0)
#   class 0: tp 1, fp 1 (pred 0 on a 1), fn 1 (a 0 predicted 1), tn 5 - 3 = 2 -> IoU 1/3, Dice 2/4
#   class 1: tp 1, fp 1, fn 1, tn 2                                            -> IoU 1/3, Dice 2/4
#   class 2: tp 1, fp 0 (the 2 predicted on the ignored pixel does not count), fn 0, tn 4 -> IoU 1, Dice 1
#   class 3: all zero but tn 5                                                  -> absent (NaN per class)
#   mean IoU (classes 0-2) = (1/3 + 1/3 + 1)/3 = 5/9; micro: tp 3, fp 2, fn 2 -> IoU 3/7, Dice 6/10
#   per image: (1/3 + 1/3 + 1 + 1 [class 3 empty/empty]) / 4 = 2/3
MC_TARGET = torch.tensor([[[0, 0, 1], [2, 255, 1]]])
MC_PRED = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
