// Data-parallel training on torch.distributed's c10d: one process per rank, a
// process group made from the usual environment (MASTER_ADDR, MASTER_PORT, RANK,
// WORLD_SIZE), as torchrun and `tlcore train --nproc` set it.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <ATen/core/Tensor.h>

#include "tlcore/error.h"

namespace tlcore {

struct DistributedOptions {
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  int rank = 0;
  int world_size = 1;
  double timeout_s = 300;  // every collective, and the rendezvous, fails after this
  // Under torchrun its agent serves the store on MASTER_PORT: every rank joins it as a
  // client, with keys under store_prefix.
  bool agent_store = false;
  std::string store_prefix;
  std::string network_interface;  // Gloo's device, e.g. "eth0" (GLOO_SOCKET_IFNAME)
};

// One rank's membership of a process group: the collectives the trainer needs.
// GlooProcessGroup is tlcore's own (C++ c10d Gloo); the Python bindings add one
// that runs torch.distributed's collectives (NCCL, Gloo, MPI, ...).
class ProcessGroup {
 public:
  virtual ~ProcessGroup() = default;

  // From MASTER_ADDR, MASTER_PORT, RANK and WORLD_SIZE (TLCORE_DIST_TIMEOUT in
  // seconds, GLOO_SOCKET_IFNAME and torchrun's TORCHELASTIC_* variables, optional),
  // on Gloo; null when WORLD_SIZE is unset or 1.
  static std::shared_ptr<ProcessGroup> from_environment();

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  virtual double timeout_s() const = 0;
  virtual std::string backend() const = 0;

  // Non-blocking sum, in place across ranks; wait() on the returned handle.
  // `what` names the collective in errors.
  class Pending {
   public:
    virtual ~Pending() = default;
    virtual void wait() = 0;
  };
  virtual std::unique_ptr<Pending> all_reduce_sum_async(at::Tensor& tensor,
                                                        const std::string& what) = 0;
  virtual void broadcast(at::Tensor& tensor, int root, const std::string& what) = 0;

  void all_reduce_sum(at::Tensor& tensor, const std::string& what);
  void barrier(const std::string& what);

  // Rows of every rank stacked in rank order (rows may differ in count between ranks).
  at::Tensor gather_rows(const at::Tensor& rows, const std::string& what);

  // Throws DistributedError for `what`, naming this rank and, where the backend
  // can tell (silent_ranks), the ranks that stopped answering.
  [[noreturn]] void fail(const std::string& what, const std::string& cause);

 protected:
  virtual std::string silent_ranks() { return ""; }
};

// torch.distributed's Gloo process group, made in C++ (needs Gloo's headers at build time).
class GlooProcessGroup : public ProcessGroup {
 public:
  // Joins the group (blocks until all ranks have joined, or the timeout).
  explicit GlooProcessGroup(const DistributedOptions& options);
  ~GlooProcessGroup() override;
  GlooProcessGroup(const GlooProcessGroup&) = delete;
  GlooProcessGroup& operator=(const GlooProcessGroup&) = delete;

  static bool available();  // built with Gloo

  int rank() const override;
  int world_size() const override;
  double timeout_s() const override;
  std::string backend() const override { return "gloo"; }
  std::unique_ptr<Pending> all_reduce_sum_async(at::Tensor& tensor,
                                                const std::string& what) override;
  void broadcast(at::Tensor& tensor, int root, const std::string& what) override;

 protected:
  std::string silent_ranks() override;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

// Averages gradients across ranks like DistributedDataParallel: trainable
// parameters are packed into buckets in reverse order (the order backward
// produces them) and each bucket's all-reduce starts from a gradient hook as
// soon as the bucket is full, overlapping communication with the rest of backward.
class GradientReducer {
 public:
  GradientReducer(std::shared_ptr<ProcessGroup> group, std::vector<at::Tensor> params,
                  std::int64_t bucket_bytes = 4 << 20);
  ~GradientReducer();
  GradientReducer(const GradientReducer&) = delete;
  GradientReducer& operator=(const GradientReducer&) = delete;

  // Call after backward: waits for every bucket and writes the averages into .grad.
  void finish();
  std::int64_t num_buckets() const;

 private:
  class Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace tlcore
