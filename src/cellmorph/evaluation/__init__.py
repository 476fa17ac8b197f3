"""Evaluation of profiles and predictions: NSC/NSCB 1-NN accuracy, mAP, confusion matrices."""
