// The one error hierarchy of tlcore. The bindings map each class to a Python
// exception once, so C++ code throws the type that says what went wrong and
// never a bare std::runtime_error.
#pragma once

#include <stdexcept>
#include <string>

namespace tlcore {

// Base of everything tlcore throws; Python sees RuntimeError.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A value or option outside what is accepted; Python sees ValueError.
class InvalidArgument : public Error {
 public:
  using Error::Error;
};

// Malformed data: a corrupt image, a truncated archive, a wrong magic number.
// Python sees ValueError; the message names the file and the problem.
class FormatError : public InvalidArgument {
 public:
  using InvalidArgument::InvalidArgument;
};

// A path that does not exist; Python sees FileNotFoundError.
class NotFound : public Error {
 public:
  using Error::Error;
};

// A bounded queue is full: retry later (HTTP 503); Python sees tlcore.Overloaded, a RuntimeError.
class Overloaded : public Error {
 public:
  using Error::Error;
};

// A feature this build was compiled without; Python sees RuntimeError.
class Unsupported : public Error {
 public:
  using Error::Error;
};

// A collective of data-parallel training failed: a rank died, hung past the timeout
// or disagreed. Python sees tlcore.DistributedError, a RuntimeError.
class DistributedError : public Error {
 public:
  using Error::Error;
};

}  // namespace tlcore
