#include "cli/remote.h"

#include <unistd.h>

#include <chrono>
#include <cstring>
#include <iostream>
#include <string>

#include "absl/flags/declare.h"
#include "absl/flags/flag.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/time.h"
#include "cli/check_policy.h"
#include "control/audit_chain.h"
#include "control/client.h"
#include "control/control_stub.h"
#include "control/rollout.h"
#include "google/protobuf/util/json_util.h"
#include "policy/diff.h"
#include "policy/text.h"
#include "policy/yaml_loader.h"
#include "portcullis/v1/control.grpc.pb.h"

ABSL_FLAG(std::string, control, "",
          "HOST:PORT of portcullis-control; replicas: a name with several addresses, or "
          "IP:PORT,IP:PORT,... (the next is tried when one is gone)");
ABSL_FLAG(std::string, ca, "", "CA certificate (PEM) of the control service");
ABSL_FLAG(std::string, cert, "", "your client certificate (PEM)");
ABSL_FLAG(std::string, key, "", "your client key (PEM)");
ABSL_FLAG(std::string, server_name, "",
          "name to expect in the control service's certificate (default: the host of --control)");
ABSL_FLAG(std::string, reason, "", "push, rollback: why (recorded in the history and audit log)");
ABSL_FLAG(uint64_t, to, 0, "rollback: the version to restore");
ABSL_FLAG(bool, allow_failsafe_change, false,
          "push, rollback: allow removing failsafe rules that the live version has");
ABSL_FLAG(absl::Duration, confirm_within, absl::ZeroDuration(),
          "push: go back to the previous version unless `portcullisctl confirm VERSION` comes "
          "within this long (e.g. 2m); agents that cannot reach the service go back by "
          "themselves");
ABSL_FLAG(bool, shadow, false,
          "push: store the policy as the shadow candidate, judged by every agent beside the "
          "live version on real traffic without acting on it (see `shadow report`)");
ABSL_FLAG(std::string, nodes, "",
          "push: a canary: make the version live on these nodes only (NODE[,NODE...]); the "
          "others keep the live version until `rollout promote` (or `rollout abort`)");
ABSL_FLAG(std::string, node_selector, "",
          "push: a canary on the nodes whose --node-labels include every KEY=VALUE[,KEY=VALUE]");
ABSL_FLAG(std::string, steps, "",
          "push: a staged rollout: the share of the nodes that runs the version at each step, "
          "e.g. 10%,50%,100%; the next step comes every --interval");
ABSL_FLAG(absl::Duration, interval, absl::ZeroDuration(),
          "push --steps: how long each step lasts before the next (e.g. 5m)");
ABSL_FLAG(std::string, max_drop_increase, "",
          "push with a canary or --steps: abort by itself when, on a canary node, drops by a "
          "reason the change touches rise above this many times their rate before (e.g. 5x)");
ABSL_FLAG(uint64_t, version, 0,
          "rollout promote, rollout abort: the canary version reviewed (refused if another is "
          "in progress); 0 = the current one");
ABSL_FLAG(uint64_t, id, 0,
          "shadow promote, shadow discard: the candidate reviewed (refused if another is "
          "current); 0 = the current one");
ABSL_FLAG(uint32_t, top, 10, "shadow report: sources listed per change");
ABSL_FLAG(bool, exit_code, false, "diff: exit 1 when there are differences");
ABSL_FLAG(bool, verify, false,
          "audit: check the audit log's hash chain and that each version holds the policy its "
          "entry recorded; exit 1 when broken");
ABSL_FLAG(std::string, expect_head, "",
          "audit --verify: SEQ:HASH, a head printed by an earlier --verify and kept apart from "
          "the control service (a ticket, a CI artifact): the log must still hold that entry");
ABSL_FLAG(std::string, audit_public_key, "",
          "audit --verify: the control service's audit signing public key(s), PEM, kept apart "
          "from it: every entry from the first signed one on must carry a valid signature");
ABSL_FLAG(uint32_t, limit, 0, "history, audit: show at most this many (newest); 0 = all");
ABSL_FLAG(int, timeout_seconds, 30, "how long to wait for the control service");
ABSL_FLAG(bool, insecure_plaintext_for_testing, false,
          "talk to a control service started with the same flag (no TLS)");

ABSL_DECLARE_FLAG(std::string, format);  // portcullisctl.cc: simulate's too

namespace portcullis::cli {
namespace {

// Text that came from the service (node names, errors, reasons: written by
// agents and editors), made safe for a terminal: control characters (an
// escape sequence can rewrite the screen) become \xNN.
std::string Printable(absl::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    const auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      absl::StrAppend(&out, "\\x", absl::Hex(u, absl::kZeroPad2));
    } else {
      out.push_back(c);
    }
  }
  return out;
}

int Fail(int code, absl::string_view message) {
  std::cerr << "portcullisctl: " << message << "\n";
  return code;
}

int ExitFor(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
    case absl::StatusCode::kNotFound:
      return kExitInvalid;
    case absl::StatusCode::kUnauthenticated:
    case absl::StatusCode::kPermissionDenied:
      return kExitDenied;
    default:
      return kExitSystem;
  }
}

std::string Time(int64_t unix_nanos) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", absl::FromUnixNanos(unix_nanos),
                          absl::UTCTimeZone());
}

std::string ShortHash(const std::string& hash) {
  return hash.size() > 19 ? hash.substr(0, 19) : hash;  // "sha256:" + 12 hex digits
}

// The control service, through the ControlStub interface; each call with
// --timeout-seconds.
class Remote {
 public:
  static absl::StatusOr<Remote> Connect() {
    control::ClientOptions options;
    options.target = absl::GetFlag(FLAGS_control);
    options.tls = {absl::GetFlag(FLAGS_ca), absl::GetFlag(FLAGS_cert), absl::GetFlag(FLAGS_key)};
    options.server_name = absl::GetFlag(FLAGS_server_name);
    options.insecure_plaintext = absl::GetFlag(FLAGS_insecure_plaintext_for_testing);
    auto channel = control::MakeChannel(options);
    if (!channel.ok()) return channel.status();
    return Remote(control::NewGrpcControlStub(*std::move(channel), options.target));
  }

  // With `deadline` from now (default: --timeout-seconds).
  template <typename Request, typename Response>
  absl::Status Call(absl::StatusOr<Response> (control::ControlStub::*method)(const Request&,
                                                                             absl::Duration),
                    const Request& request, Response* response,
                    absl::Duration deadline = absl::ZeroDuration()) {
    if (deadline == absl::ZeroDuration()) {
      deadline = absl::Seconds(absl::GetFlag(FLAGS_timeout_seconds));
    }
    absl::StatusOr<Response> r = ((*stub_).*method)(request, deadline);
    if (!r.ok()) return r.status();
    *response = *std::move(r);
    return absl::OkStatus();
  }

 private:
  explicit Remote(std::unique_ptr<control::ControlStub> stub) : stub_(std::move(stub)) {}
  std::shared_ptr<control::ControlStub> stub_;
};

int Push(Remote& remote, const std::vector<char*>& args) {
  if (args.size() != 3)
    return Fail(kExitUsage, "usage: portcullisctl push POLICY.yaml --reason \"...\"");
  const std::string reason = absl::GetFlag(FLAGS_reason);
  if (reason.empty()) return Fail(kExitUsage, "push needs --reason \"why\"");
  auto policy = CheckPolicy(args[2], /*report_valid=*/false);
  if (!policy) return kExitInvalid;
  v1::PushRequest request;
  *request.mutable_policy() = *policy;
  request.set_reason(reason);
  request.set_allow_failsafe_change(absl::GetFlag(FLAGS_allow_failsafe_change));
  const absl::Duration confirm_within = absl::GetFlag(FLAGS_confirm_within);
  if (confirm_within < absl::ZeroDuration() ||
      (confirm_within > absl::ZeroDuration() && confirm_within < absl::Seconds(1)) ||
      confirm_within > absl::Hours(24)) {
    return Fail(kExitUsage, "--confirm-within: from 1s to 24h (e.g. 2m)");
  }
  request.set_confirm_within_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(confirm_within)));
  const bool shadow = absl::GetFlag(FLAGS_shadow);
  if (shadow && confirm_within > absl::ZeroDuration()) {
    return Fail(kExitUsage,
                "--shadow changes nothing to confirm: use --confirm-within when promoting it "
                "(push it without --shadow)");
  }
  request.set_shadow(shadow);
  const std::string nodes = absl::GetFlag(FLAGS_nodes);
  auto selector = control::ParseLabels(absl::GetFlag(FLAGS_node_selector), "--node-selector");
  if (!selector.ok()) return Fail(kExitUsage, selector.status().message());
  if (!nodes.empty() && !selector->empty()) {
    return Fail(kExitUsage,
                "--nodes and --node-selector: name canary nodes or select them, not both");
  }
  for (absl::string_view node : absl::StrSplit(nodes, ',', absl::SkipEmpty())) {
    request.add_nodes(std::string(node));
  }
  request.mutable_node_selector()->insert(selector->begin(), selector->end());
  for (absl::string_view step :
       absl::StrSplit(absl::GetFlag(FLAGS_steps), ',', absl::SkipEmpty())) {
    uint32_t percent = 0;
    if (!absl::SimpleAtoi(absl::StripSuffix(absl::StripAsciiWhitespace(step), "%"), &percent)) {
      return Fail(kExitUsage, absl::StrCat("--steps: \"", step, "\" is not a share such as 10%"));
    }
    request.add_steps(percent);
  }
  const absl::Duration interval = absl::GetFlag(FLAGS_interval);
  if (request.steps_size() > 0) {
    if (absl::Status s = control::CheckSteps({request.steps().begin(), request.steps().end()});
        !s.ok()) {
      return Fail(kExitUsage, s.message());
    }
    if (interval < absl::Seconds(1) || interval > absl::Hours(24 * 7)) {
      return Fail(kExitUsage, "--steps needs --interval, from 1s to 168h (e.g. 5m)");
    }
    request.set_step_interval_seconds(static_cast<uint32_t>(absl::ToInt64Seconds(interval)));
  }
  const bool canary = request.nodes_size() > 0 || !selector->empty() || request.steps_size() > 0;
  if (const std::string factor = absl::GetFlag(FLAGS_max_drop_increase); !factor.empty()) {
    double f = 0;
    if (!absl::SimpleAtod(absl::StripSuffix(factor, "x"), &f) || !(f > 1) || f > 1e6) {
      return Fail(kExitUsage, absl::StrCat("--max-drop-increase: \"", factor,
                                           "\" is not a factor above 1 such as 5x"));
    }
    if (!canary) {
      return Fail(kExitUsage, "--max-drop-increase needs --nodes, --node-selector or --steps");
    }
    request.set_max_drop_increase(f);
  }
  v1::PushResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::Push, request, &response); !s.ok()) {
    if (!absl::IsDeadlineExceeded(s) && !absl::IsUnavailable(s) && !absl::IsCancelled(s)) {
      return Fail(ExitFor(s), absl::StrCat("push refused: ", s.message()));
    }
    if (shadow) {
      return Fail(ExitFor(s), absl::StrCat("push failed: ", s.message(),
                                           "; whether it was stored is unknown: see "
                                           "portcullisctl shadow report"));
    }
    // The answer was lost: say whether the push was stored. (The service
    // stores nothing for a client that is gone or whose deadline is too
    // near to be answered.)
    v1::HistoryRequest recent;
    recent.set_limit(100);
    v1::HistoryResponse history;
    const std::string hash = policy::ContentHash(*policy);
    // Finding out takes a read, which no push holds up: a deadline of its own.
    if (remote.Call(&control::ControlStub::History, recent, &history, absl::Seconds(15)).ok()) {
      for (const v1::PolicyVersion& v : history.versions()) {  // newest first
        if (v.content_hash() == hash && v.reason() == reason) {
          std::cerr << "the service's answer was lost (" << s.message() << "), but version "
                    << v.version() << " holds " << args[2] << " with this reason\n";
          std::cout << v.version() << "\n";
          return kExitOk;
        }
      }
      return Fail(ExitFor(s), absl::StrCat("push failed: ", s.message(),
                                           " (no version holds it: it was not stored)"));
    }
    return Fail(ExitFor(s),
                absl::StrCat("push failed: ", s.message(),
                             "; whether it was stored is unknown: see portcullisctl history"));
  }
  if (shadow) {
    std::cerr << "stored " << args[2] << " as shadow candidate " << response.shadow_id() << " ("
              << response.content_hash()
              << ")\nagents judge traffic by it beside the live version, acting on nothing: see "
                 "portcullisctl shadow report, then shadow promote or shadow discard\n";
    std::cout << response.shadow_id() << "\n";
    return kExitOk;
  }
  if (response.unchanged()) {
    std::cerr << args[2] << " equals the live version " << response.version()
              << "; nothing was pushed\n";
  } else {
    std::cerr << "pushed " << args[2] << " as version " << response.version() << " ("
              << response.content_hash() << ")\n";
    if (canary) {
      std::cerr << "a canary: live on those nodes only; the others keep the version before it. "
                   "See portcullisctl status, then rollout promote or rollout abort\n";
    }
    if (confirm_within > absl::ZeroDuration()) {
      std::cerr << "confirm it within " << absl::FormatDuration(confirm_within)
                << " (portcullisctl confirm " << response.version()
                << "), or every agent goes back to the version before it\n";
    }
  }
  std::cout << response.version() << "\n";
  return kExitOk;
}

// validate --control: the local checks, then the service's (the baseline
// against the live version).
int Validate(Remote& remote, const std::vector<char*>& args) {
  if (args.size() != 3) return Fail(kExitUsage, "usage: portcullisctl validate POLICY.yaml");
  auto policy = CheckPolicy(args[2], /*report_valid=*/false);
  if (!policy) return kExitInvalid;
  v1::ValidateRequest request;
  *request.mutable_policy() = *policy;
  request.set_allow_failsafe_change(absl::GetFlag(FLAGS_allow_failsafe_change));
  v1::ValidateResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::Validate, request, &response); !s.ok()) {
    return Fail(ExitFor(s), s.message());
  }
  int errors = 0;
  for (const v1::Finding& f : response.findings()) {
    if (f.warning()) continue;  // the local check printed the validator's warnings
    ++errors;
    std::cerr << args[2] << ": refused by the control service: " << f.path() << ": " << f.message()
              << "\n";
  }
  if (!response.valid()) {
    std::cerr << args[2] << ": invalid (" << errors << " error" << (errors == 1 ? "" : "s")
              << ")\n";
    return kExitInvalid;
  }
  std::cout << args[2] << ": valid, and the control service would accept it\n";
  return kExitOk;
}

int Diff(Remote& remote, const std::vector<char*>& args) {
  if (args.size() != 3) return Fail(kExitUsage, "usage: portcullisctl diff POLICY.yaml");
  auto policy = CheckPolicy(args[2], /*report_valid=*/false);
  if (!policy) return kExitInvalid;
  v1::DiffRequest request;
  *request.mutable_policy() = *policy;
  v1::DiffResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::Diff, request, &response); !s.ok()) {
    return Fail(ExitFor(s), s.message());
  }
  std::vector<policy::Change> changes;
  for (const v1::DiffLine& l : response.lines()) {
    changes.push_back({l.op() == v1::DiffLine::OP_ADDED     ? policy::Change::Op::kAdded
                       : l.op() == v1::DiffLine::OP_REMOVED ? policy::Change::Op::kRemoved
                                                            : policy::Change::Op::kChanged,
                       l.section(), l.text()});
  }
  const std::string base = response.live_version()
                               ? absl::StrCat("live version ", response.live_version())
                               : std::string("an empty store (nothing pushed yet)");
  if (changes.empty()) {
    std::cout << args[2] << ": no changes against " << base << "\n";
    return kExitOk;
  }
  std::cout << args[2] << " against " << base << ": " << changes.size() << " change"
            << (changes.size() == 1 ? "" : "s") << "\n"
            << policy::FormatChanges(changes, isatty(STDOUT_FILENO));
  return absl::GetFlag(FLAGS_exit_code) ? kExitInvalid : kExitOk;
}

int Rollback(Remote& remote, const std::vector<char*>& args) {
  if (args.size() != 2) {
    return Fail(kExitUsage, "usage: portcullisctl rollback --to VERSION --reason \"...\"");
  }
  v1::RollbackRequest request;
  request.set_to_version(absl::GetFlag(FLAGS_to));
  request.set_reason(absl::GetFlag(FLAGS_reason));
  request.set_allow_failsafe_change(absl::GetFlag(FLAGS_allow_failsafe_change));
  if (request.to_version() == 0) return Fail(kExitUsage, "rollback needs --to VERSION");
  if (request.reason().empty()) return Fail(kExitUsage, "rollback needs --reason \"why\"");
  v1::PushResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::Rollback, request, &response); !s.ok()) {
    return Fail(ExitFor(s), absl::StrCat("rollback refused: ", s.message()));
  }
  if (response.unchanged()) {
    std::cerr << "version " << request.to_version() << "'s policy is live already (version "
              << response.version() << ")\n";
  } else {
    std::cerr << "rolled back to version " << request.to_version() << "'s policy as version "
              << response.version() << "\n";
  }
  std::cout << response.version() << "\n";
  return kExitOk;
}

int Confirm(Remote& remote, const std::vector<char*>& args) {
  uint64_t version = 0;
  if (args.size() != 3 || !absl::SimpleAtoi(args[2], &version) || version == 0) {
    return Fail(kExitUsage, "usage: portcullisctl confirm VERSION");
  }
  v1::ConfirmRequest request;
  request.set_version(version);
  v1::PolicyVersion response;
  if (absl::Status s = remote.Call(&control::ControlStub::Confirm, request, &response); !s.ok()) {
    return Fail(ExitFor(s), absl::StrCat("not confirmed: ", s.message()));
  }
  std::cerr << "version " << version << " confirmed at " << Time(response.confirmed_unix_nanos())
            << " UTC; it stays\n";
  return kExitOk;
}

int History(Remote& remote, const std::vector<char*>&) {
  v1::HistoryRequest request;
  request.set_limit(absl::GetFlag(FLAGS_limit));
  v1::HistoryResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::History, request, &response); !s.ok()) {
    return Fail(ExitFor(s), s.message());
  }
  std::cout << absl::StrFormat("%-8s %-19s %-16s %-19s %s\n", "VERSION", "TIME (UTC)", "AUTHOR",
                               "HASH", "REASON");
  for (const v1::PolicyVersion& v : response.versions()) {
    std::string reason = Printable(v.reason());
    if (v.rollback_of()) reason = absl::StrCat("[rollback to ", v.rollback_of(), "] ", reason);
    if (v.confirm_by_unix_nanos() != 0) {
      reason =
          absl::StrCat(v.confirmed_unix_nanos() ? "[confirmed] "
                       : v.version() == response.live_version()
                           ? absl::StrCat("[to confirm by ", Time(v.confirm_by_unix_nanos()), "] ")
                           : std::string("[not confirmed] "),
                       reason);
    }
    std::cout << absl::StrFormat(
        "%-8s %-19s %-16s %-19s %s\n",
        absl::StrCat(v.version(), v.version() == response.live_version() ? "*" : ""),
        Time(v.created_unix_nanos()), Printable(v.author()), ShortHash(v.content_hash()), reason);
  }
  return kExitOk;
}

int Get(Remote& remote, const std::vector<char*>& args) {
  uint64_t version = 0;
  if (args.size() > 3 || (args.size() == 3 && !absl::SimpleAtoi(args[2], &version))) {
    return Fail(kExitUsage, "usage: portcullisctl get [VERSION]   (default: the live one)");
  }
  v1::GetRequest request;
  request.set_version(version);
  v1::PolicyVersion response;
  if (absl::Status s = remote.Call(&control::ControlStub::Get, request, &response); !s.ok()) {
    return Fail(ExitFor(s), s.message());
  }
  std::cout << "# version " << response.version() << " by " << Printable(response.author())
            << " at " << Time(response.created_unix_nanos())
            << " UTC: " << Printable(response.reason()) << "\n# " << response.content_hash() << "\n"
            << policy::ToYaml(response.policy());
  return kExitOk;
}

int Audit(Remote& remote, const std::vector<char*>&) {
  std::vector<v1::AuditEntry> all;
  for (uint64_t after = 0;;) {
    v1::AuditRequest request;
    request.set_after_seq(after);
    v1::AuditResponse response;
    if (absl::Status s = remote.Call(&control::ControlStub::Audit, request, &response); !s.ok()) {
      return Fail(ExitFor(s), s.message());
    }
    all.insert(all.end(), response.entries().begin(), response.entries().end());
    if (!response.more() || response.entries().empty()) break;
    after = all.back().seq();
  }
  if (absl::GetFlag(FLAGS_verify)) {
    if (absl::Status s = control::VerifyAuditChain(all, ""); !s.ok()) {
      return Fail(kExitInvalid, absl::StrCat("the audit chain is broken: ", s.message()));
    }
    for (const v1::AuditEntry& e : all) {
      if (e.content_hash().empty()) continue;
      v1::GetRequest request;
      request.set_version(e.version());
      v1::PolicyVersion version;
      if (absl::Status s = remote.Call(&control::ControlStub::Get, request, &version); !s.ok()) {
        return Fail(kExitInvalid, absl::StrCat("the audit chain is broken: version ", e.version(),
                                               " of entry ", e.seq(), ": ", s.message()));
      }
      if (absl::Status s = control::VerifyVersionAgainstAudit(version, e); !s.ok()) {
        return Fail(kExitInvalid, absl::StrCat("the audit chain is broken: ", s.message()));
      }
    }
    if (const std::string head = absl::GetFlag(FLAGS_expect_head); !head.empty()) {
      const std::vector<std::string> parts = absl::StrSplit(head, absl::MaxSplits(':', 1));
      uint64_t seq = 0;
      if (parts.size() != 2 || !absl::SimpleAtoi(parts[0], &seq)) {
        return Fail(kExitUsage, "--expect-head: SEQ:HASH, as --verify prints the head");
      }
      const bool held = seq >= 1 && seq <= all.size() && all[seq - 1].hash() == parts[1];
      if (!held) {
        return Fail(
            kExitInvalid,
            absl::StrCat("the audit chain is broken: it no longer holds entry ", seq, " with hash ",
                         parts[1], " (entries were removed or the chain rewritten)"));
      }
    }
    std::string signatures = "signatures not checked (no --audit-public-key)";
    if (const std::string key_file = absl::GetFlag(FLAGS_audit_public_key); !key_file.empty()) {
      auto text = policy::ReadTextFile(key_file);
      if (!text.ok()) {
        return Fail(kExitUsage, absl::StrCat("--audit-public-key: ", text.status().message()));
      }
      auto keys = control::AuditKeys::Parse(*text, absl::StrCat("--audit-public-key ", key_file));
      if (!keys.ok()) return Fail(kExitUsage, keys.status().message());
      uint64_t first_signed = 0;
      if (absl::Status s = keys->Verify(all, /*all_keys_known=*/true, first_signed); !s.ok()) {
        return Fail(kExitInvalid, absl::StrCat("the audit chain is broken: ", s.message()));
      }
      signatures = all.empty() ? std::string("no entries to check signatures of")
                               : absl::StrCat("signed from entry ", first_signed);
    }
    std::cout << "audit chain verified: " << all.size() << " entries"
              << (all.empty() ? ""
                              : absl::StrCat(", head ", all.back().seq(), ":", all.back().hash()))
              << "; " << signatures << "\n";
    return kExitOk;
  }
  const uint32_t limit = absl::GetFlag(FLAGS_limit);
  const size_t first = limit && all.size() > limit ? all.size() - limit : 0;
  // METHOD fits the longest method name (PromoteRollout).
  std::cout << absl::StrFormat("%-6s %-19s %-12s %-7s %-14s %-8s %-7s %s\n", "SEQ", "TIME (UTC)",
                               "PRINCIPAL", "ROLE", "METHOD", "OUTCOME", "VERSION", "DETAIL");
  for (size_t i = first; i < all.size(); ++i) {
    const v1::AuditEntry& e = all[i];
    std::string detail = e.detail();
    std::replace(detail.begin(), detail.end(), '\n', ' ');
    detail = Printable(detail);
    std::cout << absl::StrFormat(
        "%-6d %-19s %-12s %-7s %-14s %-8s %-7s %s\n", e.seq(), Time(e.time_unix_nanos()),
        e.principal().empty() ? "-" : Printable(e.principal()), e.role().empty() ? "-" : e.role(),
        e.method(), e.outcome(), e.version() ? absl::StrCat(e.version()) : "-", detail);
  }
  return kExitOk;
}

int Status(Remote& remote, const std::vector<char*>&) {
  v1::StatusResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::Status, v1::StatusRequest(), &response);
      !s.ok()) {
    return Fail(ExitFor(s), s.message());
  }
  std::cout << "live version: "
            << (response.live_version() ? absl::StrCat(response.live_version(), " (",
                                                       ShortHash(response.live_hash()), ")")
                                        : std::string("none"))
            << "\n";
  if (!response.store_unreachable().empty()) {
    std::cout << "stale: this replica cannot read its store ("
              << Printable(response.store_unreachable()) << "); pushes are refused\n";
  }
  if (response.has_rollout()) {
    std::cout << "rollout: version " << response.rollout().version() << " on "
              << Printable(control::DescribeTargets(response.rollout())) << "; version "
              << response.rollout().stable_version() << " (" << ShortHash(response.stable_hash())
              << ") on the others\n";
  }
  std::cout << absl::StrFormat("%-20s %-8s %-19s %-16s %-19s %-8s %-6s %s\n", "NODE", "VERSION",
                               "HASH", "STATE", "LAST SEEN (UTC)", "XDP", "READY", "INTERFACES");
  int drifted = 0, stale = 0;
  for (const v1::AgentState& a : response.agents()) {
    std::string state = a.stale() && a.drifted() ? "stale, drifted"
                        : a.stale()              ? "stale"
                        : a.drifted()            ? "drifted"
                                                 : "in sync";
    if (a.canary()) state += ", canary";
    drifted += a.drifted();
    stale += a.stale();
    std::cout << absl::StrFormat(
        "%-20s %-8d %-19s %-16s %-19s %-8s %-6s %s\n", Printable(a.status().node()),
        a.status().applied_version(), ShortHash(a.status().applied_hash()), state,
        Time(a.last_seen_unix_nanos()), Printable(a.status().xdp_mode()),
        a.status().ready() ? "yes" : "no", Printable(absl::StrJoin(a.status().interfaces(), ",")));
    if (!a.status().last_error().empty()) {
      std::cout << "    last error: " << Printable(a.status().last_error()) << "\n";
    }
  }
  std::cout << response.agents_size() << " agents: " << drifted << " drifted, " << stale
            << " stale\n";
  return kExitOk;
}

// The heading a (live -> shadow) change is listed under.
absl::string_view ChangeKind(const v1::ShadowChange& c) {
  const bool was_passed = c.from_verdict() == "pass", is_passed = c.to_verdict() == "pass";
  if (was_passed && !is_passed) return "would newly drop (or audit)";
  if (!was_passed && is_passed) return "would newly allow";
  return "would judge differently, still not passing";
}

int ShadowReport(Remote& remote) {
  const std::string format = absl::GetFlag(FLAGS_format);
  if (format != "table" && format != "json") {
    return Fail(kExitUsage, absl::StrCat("--format: \"", format, "\" is not table or json"));
  }
  v1::ShadowReportRequest request;
  request.set_top(absl::GetFlag(FLAGS_top));
  v1::ShadowReportResponse r;
  if (absl::Status s = remote.Call(&control::ControlStub::ShadowReport, request, &r); !s.ok()) {
    return Fail(ExitFor(s), s.message());
  }
  if (format == "json") {
    std::string json;
    google::protobuf::util::JsonPrintOptions options;
    options.add_whitespace = true;
    options.preserve_proto_field_names = true;
    if (!google::protobuf::util::MessageToJsonString(r, &json, options).ok()) {
      return Fail(kExitSystem, "cannot write the report as JSON");
    }
    std::cout << json;
    return kExitOk;
  }
  if (!r.has_candidate()) {
    std::cout << "no shadow candidate (push one with portcullisctl push POLICY.yaml --shadow)\n";
    return kExitOk;
  }
  const v1::ShadowCandidate& c = r.candidate();
  std::cout << "shadow candidate " << c.id() << " (" << ShortHash(c.content_hash()) << ") by "
            << Printable(c.author()) << " at " << Time(c.created_unix_nanos()) << " UTC: \""
            << Printable(c.reason()) << "\"\n";
  std::cout << "judged beside live version " << r.live_version() << " on "
            << r.agents_reporting_size() << " agent" << (r.agents_reporting_size() == 1 ? "" : "s")
            << (r.agents_reporting().empty()
                    ? std::string()
                    : absl::StrCat(" (", Printable(absl::StrJoin(r.agents_reporting(), ", ")), ")"))
            << "\n";
  if (!r.agents_missing().empty()) {
    std::cout << "not (yet) reported by " << r.agents_missing_size() << " live agent"
              << (r.agents_missing_size() == 1 ? "" : "s") << ": "
              << Printable(absl::StrJoin(r.agents_missing(), ", ")) << "\n";
  }
  for (const std::string& e : r.agent_errors()) std::cout << "error: " << Printable(e) << "\n";
  if (r.changes().empty()) {
    std::cout << "it would change the verdict of no packet seen so far\n";
    return kExitOk;
  }
  for (absl::string_view kind : {"would newly drop (or audit)", "would newly allow",
                                 "would judge differently, still not passing"}) {
    uint64_t packets = 0;
    for (const v1::ShadowChange& ch : r.changes()) {
      if (ChangeKind(ch) == kind) packets += ch.packets();
    }
    if (packets == 0) continue;
    std::cout << kind << ": " << packets << " packet" << (packets == 1 ? "" : "s") << "\n";
    for (const v1::ShadowChange& ch : r.changes()) {
      if (ChangeKind(ch) != kind) continue;
      std::cout << "  " << ch.from_verdict() << "/" << ch.from_reason() << " -> " << ch.to_verdict()
                << "/" << ch.to_reason() << ": " << ch.packets() << " packet"
                << (ch.packets() == 1 ? "" : "s") << " from " << ch.sources() << " source"
                << (ch.sources() == 1 ? "" : "s") << "\n";
      std::vector<std::string> ports, sources;
      for (const v1::ShadowTransition& p : ch.ports()) {
        ports.push_back(p.port() ? absl::StrCat(p.proto(), "/", p.port(), " ", p.packets())
                                 : absl::StrCat(p.proto(), " ", p.packets()));
      }
      for (const v1::ShadowSource& src : ch.top_sources()) {
        sources.push_back(absl::StrCat(Printable(src.address()), " (", src.packets(), ")"));
      }
      std::cout << "      to: " << absl::StrJoin(ports, ", ") << "\n";
      std::cout << "      top sources: " << absl::StrJoin(sources, ", ") << "\n";
    }
  }
  return kExitOk;
}

int ShadowPromote(Remote& remote) {
  v1::PromoteShadowRequest request;
  request.set_id(absl::GetFlag(FLAGS_id));
  request.set_reason(absl::GetFlag(FLAGS_reason));
  request.set_allow_failsafe_change(absl::GetFlag(FLAGS_allow_failsafe_change));
  if (request.reason().empty()) return Fail(kExitUsage, "shadow promote needs --reason \"why\"");
  v1::PushResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::PromoteShadow, request, &response);
      !s.ok()) {
    return Fail(ExitFor(s), absl::StrCat("not promoted: ", s.message()));
  }
  std::cerr << "promoted the shadow candidate as version " << response.version() << " ("
            << response.content_hash() << ")\n";
  std::cout << response.version() << "\n";
  return kExitOk;
}

int ShadowDiscard(Remote& remote) {
  v1::DiscardShadowRequest request;
  request.set_id(absl::GetFlag(FLAGS_id));
  request.set_reason(absl::GetFlag(FLAGS_reason));
  if (request.reason().empty()) return Fail(kExitUsage, "shadow discard needs --reason \"why\"");
  v1::DiscardShadowResponse response;
  if (absl::Status s = remote.Call(&control::ControlStub::DiscardShadow, request, &response);
      !s.ok()) {
    return Fail(ExitFor(s), absl::StrCat("not discarded: ", s.message()));
  }
  std::cerr << "discarded shadow candidate " << response.id() << "\n";
  return kExitOk;
}

int Rollout(Remote& remote, const std::vector<char*>& args) {
  const std::string sub = args.size() == 3 ? args[2] : "";
  if (sub != "promote" && sub != "abort") {
    return Fail(kExitUsage, "usage: portcullisctl rollout promote|abort --reason \"...\"");
  }
  v1::RolloutRequest request;
  request.set_version(absl::GetFlag(FLAGS_version));
  request.set_reason(absl::GetFlag(FLAGS_reason));
  if (request.reason().empty()) {
    return Fail(kExitUsage, absl::StrCat("rollout ", sub, " needs --reason \"why\""));
  }
  v1::PushResponse response;
  absl::Status s = remote.Call(sub == "promote" ? &control::ControlStub::PromoteRollout
                                                : &control::ControlStub::AbortRollout,
                               request, &response);
  if (!s.ok()) return Fail(ExitFor(s), absl::StrCat("rollout not ", sub, "ed: ", s.message()));
  if (sub == "promote") {
    std::cerr << "version " << response.version() << " is live on every node\n";
  } else {
    std::cerr << "rollout aborted: the canaries go back, as version " << response.version()
              << " for every node\n";
  }
  std::cout << response.version() << "\n";
  return kExitOk;
}

int Shadow(Remote& remote, const std::vector<char*>& args) {
  const std::string sub = args.size() == 3 ? args[2] : "";
  if (sub == "report") return ShadowReport(remote);
  if (sub == "promote") return ShadowPromote(remote);
  if (sub == "discard") return ShadowDiscard(remote);
  return Fail(kExitUsage, "usage: portcullisctl shadow report|promote|discard");
}

}  // namespace

bool IsRemoteCommand(const char* command) {
  for (const char* c : {"push", "diff", "rollback", "confirm", "history", "get", "audit", "status",
                        "shadow", "rollout"}) {
    if (std::strcmp(command, c) == 0) return true;
  }
  // validate is local, and also asks the service when one is named.
  return std::strcmp(command, "validate") == 0 && !absl::GetFlag(FLAGS_control).empty();
}

int RunRemote(const std::vector<char*>& args) {
  const std::string command = args[1];
  auto remote = Remote::Connect();
  if (!remote.ok()) return Fail(kExitUsage, remote.status().message());
  if (command == "validate") return Validate(*remote, args);
  if (command == "push") return Push(*remote, args);
  if (command == "diff") return Diff(*remote, args);
  if (command == "rollback") return Rollback(*remote, args);
  if (command == "confirm") return Confirm(*remote, args);
  if (command == "get") return Get(*remote, args);
  if (command == "shadow") return Shadow(*remote, args);
  if (command == "rollout") return Rollout(*remote, args);
  if (args.size() != 2) {
    return Fail(kExitUsage, absl::StrCat(command, " takes no positional arguments"));
  }
  if (command == "history") return History(*remote, args);
  if (command == "audit") return Audit(*remote, args);
  return Status(*remote, args);
}

}  // namespace portcullis::cli
