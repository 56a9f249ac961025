// Agent reports shared through etcd (--store etcd), so that any replica's
// status shows every agent, whichever replica it reports to:
//
//   P/agents/NODE   the node's latest report (store::EtcdAgent)
//
// Writes are batched: Publish() keeps the node's newest report, and a
// thread writes what is pending every `flush_interval`, up to kBatch keys a
// transaction. A report that changes what the node runs (anything but its
// counters and shadow counts) is written at the next flush; one that only
// moves counters at most every `refresh`, so that 5,000 agents reporting
// every 10 s do not grow etcd's history by a write each. Keys are written
// under leases granted every `lease_period` and never renewed, with a TTL
// of the registry's forget-after plus that period: a node that no replica
// hears from any more expires from etcd on its own, whichever replica wrote
// it last and whether that replica still runs.
//
// Another thread reads the prefix and then watches it, keeping the other
// replicas' reports in the registry (AgentRegistry::Ingest). When the watch
// breaks (a member lost, history compacted) it reads the prefix again.
#pragma once

#include <condition_variable>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "absl/time/time.h"
#include "control/agent_registry.h"
#include "control/etcd_client.h"
#include "control/store.h"
#include "portcullis/store/etcd.pb.h"

namespace portcullis::control {

struct EtcdAgentShareOptions {
  absl::Duration flush_interval = absl::Seconds(1);
  absl::Duration refresh = absl::Seconds(15);  // ≤ the registry's stale-after / 3
  absl::Duration lease_period = absl::Minutes(1);
  absl::Duration retry = absl::Seconds(1);  // after a failed read or watch
};

class EtcdAgentShare final : public AgentShare {
 public:
  // Keys under `prefix`/agents/; `replica` names this one in its records.
  EtcdAgentShare(EtcdClient& client, const std::string& prefix, std::string replica,
                 AgentRegistry& registry, EtcdAgentShareOptions options = {});
  ~EtcdAgentShare() override;
  EtcdAgentShare(const EtcdAgentShare&) = delete;
  EtcdAgentShare& operator=(const EtcdAgentShare&) = delete;

  void Publish(const v1::AgentStatus& status) override;

  // Keys a transaction writes: under etcd's default --max-txn-ops (128),
  // and at 16 KiB a report under its default request limit (1.5 MiB).
  static constexpr size_t kBatch = 64;

 private:
  struct Written {
    std::string state;  // the report without counters and shadow counts
    absl::Time at;
  };
  void FlushLoop();
  void Flush();
  void FollowLoop();
  // Reads every record under the prefix, keeps the others' in the registry,
  // and returns the revision it read at.
  absl::StatusOr<int64_t> ReadAll();
  void Keep(const mvccpb::KeyValue& kv);
  // The lease new keys go under (granting the next one when due).
  absl::StatusOr<int64_t> CurrentLease();
  bool Wait(absl::Duration d);  // false once stopping

  EtcdClient& client_;
  const std::string prefix_;  // P/agents/
  const std::string replica_;
  AgentRegistry& registry_;
  const EtcdAgentShareOptions options_;

  std::mutex mu_;
  std::condition_variable cv_;
  bool stopping_ = false;                            // under mu_
  std::map<std::string, store::EtcdAgent> pending_;  // under mu_, by node
  std::map<std::string, Written> written_;           // under mu_, by node
  grpc::ClientContext* watch_ = nullptr;             // under mu_, to cancel
  int64_t lease_ = 0;                                // the flusher's only
  absl::Time lease_granted_;                         // the flusher's only
  bool failing_ = false;                             // the flusher's only: logged once
  std::thread flusher_, follower_;
};

}  // namespace portcullis::control
