// The validation pass of a fit (private to train/).
#pragma once

#include <cstdint>

#include "tlcore/train/distributed.h"
#include "tlcore/train/trainer.h"
#include "training_data.h"

namespace tlcore::detail {

struct ValidationScores {
  double loss = 0;      // mean cross-entropy
  double accuracy = 0;  // as scikit-learn's accuracy_score
  double f1 = 0;        // macro F1, as scikit-learn's f1_score(average="macro")
};

// Scores of predictions against their labels.
ValidationScores score(const Predictions& p, std::int64_t num_classes);

// Scores the model as it stands on the validation samples of `data`.
ValidationScores evaluate(TrainingData& data, std::int64_t num_classes);

// Every rank's predictions, each dataset index once (padded shards repeat some).
Predictions gather_predictions(ProcessGroup& group, const Predictions& p);

}  // namespace tlcore::detail
