"""Evaluation of profiles and predictions: NSC/NSCB 1-NN accuracy, mAP, aggregation and scoring
of fine-tuning predictions, confusion matrices."""
