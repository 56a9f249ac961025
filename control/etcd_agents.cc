#include "control/etcd_agents.h"

#include <chrono>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace portcullis::control {
namespace {

// What the node runs, for "changed": its report without what moves with
// every packet.
std::string StateOf(const v1::AgentStatus& status) {
  v1::AgentStatus s = status;
  s.clear_counters();
  s.clear_shadow();
  return s.SerializeAsString();
}

}  // namespace

EtcdAgentShare::EtcdAgentShare(EtcdClient& client, const std::string& prefix, std::string replica,
                               AgentRegistry& registry, EtcdAgentShareOptions options)
    : client_(client),
      prefix_(prefix + "/agents/"),
      replica_(std::move(replica)),
      registry_(registry),
      options_(options) {
  flusher_ = std::thread([this] { FlushLoop(); });
  follower_ = std::thread([this] { FollowLoop(); });
}

EtcdAgentShare::~EtcdAgentShare() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    if (watch_) watch_->TryCancel();
  }
  cv_.notify_all();
  flusher_.join();
  follower_.join();
}

bool EtcdAgentShare::Wait(absl::Duration d) {
  std::unique_lock<std::mutex> lock(mu_);
  return !cv_.wait_for(lock, absl::ToChronoMilliseconds(d), [this] { return stopping_; });
}

void EtcdAgentShare::Publish(const v1::AgentStatus& status) {
  const absl::Time now = absl::Now();
  std::string state = StateOf(status);
  std::lock_guard<std::mutex> lock(mu_);
  auto w = written_.find(status.node());
  if (w != written_.end() && w->second.state == state && now - w->second.at < options_.refresh) {
    return;  // only counters moved, and the record is recent
  }
  store::EtcdAgent& record = pending_[status.node()];
  *record.mutable_status() = status;
  record.set_reported_unix_nanos(absl::ToUnixNanos(now));
  record.set_replica(replica_);
  written_[status.node()] = {std::move(state), now};  // taken as written; undone if it fails
}

absl::StatusOr<int64_t> EtcdAgentShare::CurrentLease() {
  const absl::Time now = absl::Now();
  if (lease_ != 0 && now - lease_granted_ < options_.lease_period) return lease_;
  const int64_t ttl = absl::ToInt64Seconds(registry_.forget_after() + options_.lease_period) + 1;
  auto granted = client_.LeaseGrant(ttl);
  if (!granted.ok()) return granted.status();
  if (!granted->error().empty()) return absl::UnavailableError(granted->error());
  lease_ = granted->id();
  lease_granted_ = now;
  return lease_;
}

void EtcdAgentShare::Flush() {
  std::map<std::string, store::EtcdAgent> batch;
  {
    std::lock_guard<std::mutex> lock(mu_);
    batch.swap(pending_);
    // Nodes no report came for within forget-after are the registry's to
    // forget, and etcd's lease to expire.
    const absl::Time forget = absl::Now() - registry_.forget_after();
    std::erase_if(written_, [&](const auto& w) { return w.second.at < forget; });
  }
  if (batch.empty()) return;
  absl::Status failed;
  auto lease = CurrentLease();
  if (!lease.ok()) failed = lease.status();
  auto it = batch.begin();
  while (failed.ok() && it != batch.end()) {
    etcdserverpb::TxnRequest txn;
    for (size_t n = 0; n < kBatch && it != batch.end(); ++n, ++it) {
      etcdserverpb::PutRequest* put = txn.add_success()->mutable_request_put();
      put->set_key(prefix_ + it->first);
      put->set_value(it->second.SerializeAsString());
      put->set_lease(*lease);
    }
    auto done = client_.Txn(txn);
    if (!done.ok()) {
      failed = done.status();
      // A lease that expired (the replica was cut off for long) is granted anew.
      if (absl::StrContains(failed.message(), "lease not found")) lease_ = 0;
      // What this transaction held is written again with what is left.
      for (size_t n = 0; n < static_cast<size_t>(txn.success_size()); ++n) --it;
    }
  }
  if (failed.ok()) {
    if (failing_) LogInfo("agent reports reach etcd again", {});
    failing_ = false;
    return;
  }
  if (!failing_) {
    LogError("cannot share agent reports through etcd: the other replicas show them late",
             {{"error", std::string(failed.message())}});
  }
  failing_ = true;
  std::lock_guard<std::mutex> lock(mu_);
  for (; it != batch.end(); ++it) {
    pending_.try_emplace(it->first, std::move(it->second));  // unless a newer one came
    written_.erase(it->first);
  }
}

void EtcdAgentShare::FlushLoop() {
  while (Wait(options_.flush_interval)) Flush();
}

void EtcdAgentShare::Keep(const mvccpb::KeyValue& kv) {
  store::EtcdAgent record;
  if (!record.ParseFromString(kv.value())) {
    LogError("an agent record in etcd cannot be decoded", {{"key", kv.key()}});
    return;
  }
  if (record.replica() == replica_) return;  // this replica's registry has it
  if (absl::Status s =
          registry_.Ingest(record.status(), absl::FromUnixNanos(record.reported_unix_nanos()));
      !s.ok()) {
    LogError("an agent record in etcd is refused",
             {{"key", kv.key()}, {"error", std::string(s.message())}});
  }
}

absl::StatusOr<int64_t> EtcdAgentShare::ReadAll() {
  etcdserverpb::RangeRequest req;
  req.set_key(prefix_);
  req.set_range_end(EtcdPrefixEnd(prefix_));
  req.set_limit(1000);
  int64_t revision = 0;
  for (;;) {
    auto page = client_.Range(req);
    if (!page.ok()) return page.status();
    if (revision == 0) {
      revision = page->header().revision();
      req.set_revision(revision);  // every page from the same snapshot
    }
    for (const mvccpb::KeyValue& kv : page->kvs()) Keep(kv);
    if (!page->more() || page->kvs_size() == 0) return revision;
    req.set_key(page->kvs(page->kvs_size() - 1).key() + std::string(1, '\0'));
  }
}

void EtcdAgentShare::FollowLoop() {
  do {
    auto revision = ReadAll();
    if (!revision.ok()) continue;  // the store follower reports etcd's loss
    grpc::ClientContext ctx;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (stopping_) return;
      watch_ = &ctx;
    }
    client_
        .Watch(ctx, prefix_, EtcdPrefixEnd(prefix_), *revision + 1,
               [this](const etcdserverpb::WatchResponse& r) {
                 // Compacted past where it started, or cancelled: read again.
                 if (r.canceled() || r.compact_revision() != 0) return false;
                 for (const mvccpb::Event& e : r.events()) {
                   if (e.type() == mvccpb::Event::PUT) Keep(e.kv());
                 }
                 return true;
               })
        .IgnoreError();
    std::lock_guard<std::mutex> lock(mu_);
    watch_ = nullptr;
  } while (Wait(options_.retry));
}

}  // namespace portcullis::control
