#include "tlcore/train/distributed.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>

#ifdef TLCORE_HAVE_GLOO
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#endif

namespace tlcore {
namespace {

std::string message_of(const std::exception& e) {
  if (const auto* c10_error = dynamic_cast<const c10::Error*>(&e))
    return c10_error->what_without_backtrace();
  return e.what();
}

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (!value || !*value) return fallback;
  char* end = nullptr;
  const long v = std::strtol(value, &end, 10);
  if (*end != '\0') throw InvalidArgument(std::string(name) + "='" + value + "' is not an integer");
  return static_cast<int>(v);
}

std::string where(int rank, int world_size) {
  return "rank " + std::to_string(rank) + " of " + std::to_string(world_size);
}

}  // namespace

#ifdef TLCORE_HAVE_GLOO
using Group = c10d::ProcessGroupGloo;
using WorkPtr =
    decltype(std::declval<Group&>().allreduce(std::declval<std::vector<at::Tensor>&>()));
#endif

void ProcessGroup::all_reduce_sum(at::Tensor& tensor, const std::string& what) {
  all_reduce_sum_async(tensor, what)->wait();
}

void ProcessGroup::barrier(const std::string& what) {
  auto token = torch::zeros({1});
  all_reduce_sum(token, what);  // a barrier that fails with the same clear error as the rest
}

at::Tensor ProcessGroup::gather_rows(const at::Tensor& rows, const std::string& what) {
  const int world = world_size();
  auto counts = torch::zeros({world}, torch::kLong);
  counts[rank()] = rows.size(0);
  all_reduce_sum(counts, what + " (row counts)");
  const auto most = counts.max().item<std::int64_t>();
  auto shape = rows.sizes().vec();
  shape[0] = most * world;
  // A sum where every rank fills only its own slot is a gather that any backend can do.
  auto slots = torch::zeros(shape, rows.options());
  slots.narrow(0, most * rank(), rows.size(0)).copy_(rows);
  all_reduce_sum(slots, what);
  std::vector<at::Tensor> parts;
  for (int r = 0; r < world; ++r)
    parts.push_back(slots.narrow(0, most * r, counts[r].item<std::int64_t>()));
  return torch::cat(parts);
}

void ProcessGroup::fail(const std::string& what, const std::string& cause) {
  const std::string silent = silent_ranks();
  throw DistributedError(where(rank(), world_size()) + ": " + what +
                         " failed: another rank died or did not answer within " +
                         std::to_string(static_cast<int>(timeout_s())) + " s (" + cause + ")" +
                         (silent.empty() ? "" : "; " + silent));
}

std::shared_ptr<ProcessGroup> ProcessGroup::from_environment() {
  const int world = env_int("WORLD_SIZE", 1);
  if (world <= 1) return nullptr;
  DistributedOptions o;
  o.world_size = world;
  o.rank = env_int("RANK", -1);
  if (o.rank < 0) throw InvalidArgument("distributed: WORLD_SIZE is set but RANK is not");
  if (const char* addr = std::getenv("MASTER_ADDR"); addr && *addr) o.master_addr = addr;
  o.master_port = env_int("MASTER_PORT", o.master_port);
  if (const char* t = std::getenv("TLCORE_DIST_TIMEOUT"); t && *t) o.timeout_s = std::atof(t);
  if (const char* agent = std::getenv("TORCHELASTIC_USE_AGENT_STORE"))
    o.agent_store = std::string(agent) == "True";
  // torch.distributed's own prefix is /worker/attempt_N: these keys stay apart from its keys.
  o.store_prefix = "tlcore/attempt_" + std::to_string(env_int("TORCHELASTIC_RESTART_COUNT", 0));
  if (const char* names = std::getenv("GLOO_SOCKET_IFNAME"); names && *names) {
    const std::string all = names;
    o.network_interface = all.substr(0, all.find(','));
  }
  return std::make_shared<GlooProcessGroup>(o);
}

class GlooProcessGroup::Impl {
 public:
  DistributedOptions options;
#ifdef TLCORE_HAVE_GLOO
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<Group> group;
#endif
};

bool GlooProcessGroup::available() {
#ifdef TLCORE_HAVE_GLOO
  return true;
#else
  return false;
#endif
}

GlooProcessGroup::GlooProcessGroup(const DistributedOptions& o) : impl_(std::make_unique<Impl>()) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size)
    throw InvalidArgument("distributed: rank " + std::to_string(o.rank) +
                          " is outside world size " + std::to_string(o.world_size));
  if (o.master_port <= 0 || o.master_port > 65535)
    throw InvalidArgument("distributed: MASTER_PORT " + std::to_string(o.master_port) +
                          " is not a TCP port");
  if (!(o.timeout_s > 0)) throw InvalidArgument("distributed: the timeout must be positive");
  impl_->options = o;
#ifndef TLCORE_HAVE_GLOO
  throw Unsupported(
      "tlcore's own Gloo process group needs Gloo's headers, and this tlcore was built without "
      "them (on Debian: apt-get install libgloo-dev, then rebuild); torch.distributed's process "
      "groups still work: call torch.distributed.init_process_group first");
#else
  const auto timeout = std::chrono::milliseconds(static_cast<std::int64_t>(o.timeout_s * 1000));
  c10d::TCPStoreOptions store_options;
  store_options.port = static_cast<std::uint16_t>(o.master_port);
  store_options.isServer = o.rank == 0 && !o.agent_store;
  store_options.numWorkers = static_cast<std::size_t>(o.world_size);
  store_options.waitWorkers = !o.agent_store;
  store_options.timeout = timeout;
  try {
    impl_->store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, store_options);
    if (!o.store_prefix.empty())
      impl_->store = c10::make_intrusive<c10d::PrefixStore>(o.store_prefix, impl_->store);
    auto options = Group::Options::create(timeout);
    const bool local = o.master_addr == "127.0.0.1" || o.master_addr == "localhost";
    if (!o.network_interface.empty()) {
      options->devices.push_back(Group::createDeviceForInterface(o.network_interface));
    } else {
      options->devices.push_back(local ? Group::createDeviceForHostname("127.0.0.1")
                                       : Group::createDefaultDevice());
    }
    impl_->group = c10::make_intrusive<Group>(impl_->store, o.rank, o.world_size, options);
  } catch (const std::exception& e) {
    throw DistributedError(where(o.rank, o.world_size) + ": could not join the process group at " +
                           o.master_addr + ":" + std::to_string(o.master_port) + " within " +
                           std::to_string(o.timeout_s) + " s (" + message_of(e) + ")");
  }
#endif
}

GlooProcessGroup::~GlooProcessGroup() = default;

int GlooProcessGroup::rank() const { return impl_->options.rank; }
int GlooProcessGroup::world_size() const { return impl_->options.world_size; }
double GlooProcessGroup::timeout_s() const { return impl_->options.timeout_s; }

std::string GlooProcessGroup::silent_ranks() {
#ifdef TLCORE_HAVE_GLOO
  // Rank 0 can find out which ranks stopped answering; the others only know a peer left.
  if (rank() != 0) return "";
  try {
    c10d::BarrierOptions options;
    options.timeout = std::chrono::milliseconds(
        static_cast<std::int64_t>(std::min(impl_->options.timeout_s, 10.0) * 1000));
    impl_->group->monitoredBarrier(options, /*waitAllRanks=*/true);
  } catch (const std::exception& e) {
    return message_of(e);
  }
#endif
  return "";
}

namespace {
#ifdef TLCORE_HAVE_GLOO
class GlooPending : public ProcessGroup::Pending {
 public:
  GlooPending(ProcessGroup& group, WorkPtr work, std::string what)
      : group_(group), work_(std::move(work)), what_(std::move(what)) {}
  void wait() override {
    try {
      work_->wait();
    } catch (const std::exception& e) {
      group_.fail(what_, message_of(e));
    }
  }

 private:
  ProcessGroup& group_;
  WorkPtr work_;
  std::string what_;
};
#endif
}  // namespace

std::unique_ptr<ProcessGroup::Pending> GlooProcessGroup::all_reduce_sum_async(
    at::Tensor& tensor, const std::string& what) {
#ifdef TLCORE_HAVE_GLOO
  std::vector<at::Tensor> tensors{tensor};
  try {
    return std::make_unique<GlooPending>(*this, impl_->group->allreduce(tensors), what);
  } catch (const std::exception& e) {
    fail(what, message_of(e));
  }
#else
  (void)tensor;
  throw Unsupported(what + ": built without Gloo");
#endif
}

void GlooProcessGroup::broadcast(at::Tensor& tensor, int root, const std::string& what) {
#ifdef TLCORE_HAVE_GLOO
  std::vector<at::Tensor> tensors{tensor};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  try {
    GlooPending(*this, impl_->group->broadcast(tensors, options), what).wait();
  } catch (const DistributedError&) {
    throw;
  } catch (const std::exception& e) {
    fail(what, message_of(e));
  }
#else
  (void)tensor;
  (void)root;
  throw Unsupported(what + ": built without Gloo");
#endif
}

}  // namespace tlcore
