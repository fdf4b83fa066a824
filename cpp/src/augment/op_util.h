// Helpers shared by the op files: argument checks with uniform messages and
// number formatting for repr().
#pragma once

#include <string>

namespace tlcore::augment_detail {

// Shortest round-trip-ish form: 0.08, 1.33333, 224.
std::string format_number(double value);
// "(a, b)"
std::string format_pair(double a, double b);

// Each throws InvalidArgument "<op>: <what> must be ..., got <value>".
void require_positive(const std::string& op, const std::string& what, int value);
void require_non_negative(const std::string& op, const std::string& what, int value);
void require_probability(const std::string& op, double p);
void require_finite(const std::string& op, const std::string& what, double value);

}  // namespace tlcore::augment_detail
