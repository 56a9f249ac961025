// portcullis-control: see service.h and PRODUCT.md "Command-line contract".
#include <fcntl.h>
#include <grpcpp/grpcpp.h>
#include <prometheus/registry.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/flags.h"
#include "common/http_server.h"
#include "common/log.h"
#include "control/baseline.h"
#include "control/etcd_store.h"
#include "control/service.h"
#include "control/sqlite_store.h"
#include "control/tls.h"
#include "control/wire.h"
#include "policy/yaml_loader.h"

ABSL_FLAG(std::string, listen, "0.0.0.0:9443", "HOST:PORT for the gRPC API (mTLS).");
ABSL_FLAG(std::string, state_dir, "/var/lib/portcullis-control",
          "Where the store (control.db), the role map (roles.yaml) and --dev's certificates live.");
ABSL_FLAG(std::string, store, "sqlite",
          "Where versions and the audit log live: sqlite (control.db in --state-dir, one "
          "replica) or etcd (--etcd-endpoints, any number of replicas).");
ABSL_FLAG(std::vector<std::string>, etcd_endpoints, {},
          "With --store etcd: the members' client URLs, http:// or https://.");
ABSL_FLAG(std::string, etcd_ca, "",
          "With https:// etcd endpoints: the CA (PEM) of etcd's certificates.");
ABSL_FLAG(
    std::string, etcd_cert, "",
    "With https:// etcd endpoints: this service's client certificate (PEM), if etcd asks for one.");
ABSL_FLAG(std::string, etcd_key, "", "The private key (PEM) of --etcd-cert.");
ABSL_FLAG(std::string, etcd_prefix, "/portcullis",
          "With --store etcd: the key prefix every replica of one control plane shares.");
ABSL_FLAG(std::string, ca, "", "CA certificate (PEM) that client certificates must chain to.");
ABSL_FLAG(std::string, cert, "", "The service's certificate (PEM).");
ABSL_FLAG(std::string, key, "", "The service's private key (PEM).");
ABSL_FLAG(std::string, crl, "",
          "Certificate revocation list (PEM, signed by the --ca CA; with --dev, the dev CA): "
          "callers whose certificate it lists are refused, and their policy streams ended. "
          "Re-read when it changes.");
ABSL_FLAG(absl::Duration, tls_refresh_interval, portcullis::control::kDefaultTlsRefresh,
          "How often --ca, --cert, --key and --crl are re-read for changes (renewed "
          "certificates are used without a restart), and open streams' certificates checked "
          "again for expiry and revocation.");
ABSL_FLAG(std::string, audit_signing_key, "",
          "Ed25519 private key (PEM; openssl genpkey -algorithm ed25519) that signs each audit "
          "entry, kept apart from the state dir (a Secret): audit --verify --audit-public-key "
          "then detects a chain rewritten by whoever can write the database. --dev makes one.");
ABSL_FLAG(bool, dev, false,
          "Create, once, a throwaway CA, a server certificate and a client certificate per role "
          "(admin, editor, viewer, agent) under STATE_DIR/tls/, with a role map; use them "
          "instead of --ca/--cert/--key.");
ABSL_FLAG(bool, dev_certs_only, false,
          "With --dev: create the certificates and the role map, print where, and exit (for "
          "deploy/overlays/dev, which hands them to the agents as Secrets).");
ABSL_FLAG(std::string, role_map, "",
          "The role map (YAML: certificate common name -> role); default STATE_DIR/roles.yaml. "
          "Re-read when it changes.");
ABSL_FLAG(std::string, protected_ports, "10254,10250,2379-2380,6443",
          "Ports no policy may open to every source (ingress admin, kubelet, etcd, API server).");
ABSL_FLAG(std::string, management_ports, "22,10250",
          "Node-management ports that a defaultAction: deny policy must cover with a failsafe "
          "rule (ssh, kubelet).");
ABSL_FLAG(std::string, metrics_addr, "0.0.0.0:9470",
          "HOST:PORT for /metrics, /healthz and /readyz; empty to disable.");
ABSL_FLAG(int, stale_after_seconds, 45,
          "An agent that has not reported for this long is stale (agents report every 10 s).");
ABSL_FLAG(absl::Duration, refusal_audit_window, absl::Minutes(1),
          "Refused calls are audited one row each up to 20 per window, then counted into one "
          "summary row per window.");
ABSL_FLAG(std::vector<std::string>, dev_node_certs, {},
          "With --dev: also issue, once, a certificate per node (tls/agent-NODE.crt, named "
          "portcullis-agent:NODE) and accept only those from agents.");
ABSL_FLAG(bool, allow_shared_agent_certs, false,
          "Let an agent certificate not named portcullis-agent:NODE speak for any node (one "
          "certificate shared by every node). --dev turns it on for its shared agent "
          "certificate.");
ABSL_FLAG(int, max_watch_streams, 10000,
          "Policy streams open at once, at most (one per agent); more are refused.");
ABSL_FLAG(int, max_memory_mb, 1024,
          "Memory for gRPC's buffers; above it the service refuses new work instead of growing.");
ABSL_FLAG(bool, insecure_plaintext_for_testing, false,
          "Serve without TLS and let every caller do everything. Never in production.");

namespace {

int Fail(const std::string& message) {
  portcullis::LogError(message);
  return 1;
}

// --store: SQLite in `state_dir`, or etcd.
absl::StatusOr<std::unique_ptr<portcullis::control::Store>> OpenStore(
    const std::string& state_dir) {
  using namespace portcullis::control;
  const std::string kind = absl::GetFlag(FLAGS_store);
  const std::vector<std::string> endpoints = absl::GetFlag(FLAGS_etcd_endpoints);
  if (kind == "sqlite") {
    if (!endpoints.empty()) {
      return absl::InvalidArgumentError("--etcd-endpoints is given, but --store is sqlite");
    }
    auto store = SqliteStore::Open(state_dir);
    if (!store.ok()) return store.status();
    return std::unique_ptr<Store>(*std::move(store));
  }
  if (kind == "etcd") {
    EtcdOptions etcd;
    etcd.endpoints = endpoints;
    etcd.ca_file = absl::GetFlag(FLAGS_etcd_ca);
    etcd.cert_file = absl::GetFlag(FLAGS_etcd_cert);
    etcd.key_file = absl::GetFlag(FLAGS_etcd_key);
    auto store = EtcdStore::Open(etcd, absl::GetFlag(FLAGS_etcd_prefix));
    if (!store.ok()) return store.status();
    portcullis::LogInfo("store", {{"store", "etcd"},
                                  {"endpoints", absl::StrJoin(endpoints, ",")},
                                  {"prefix", absl::GetFlag(FLAGS_etcd_prefix)}});
    return std::unique_ptr<Store>(*std::move(store));
  }
  return absl::InvalidArgumentError(
      absl::StrCat("--store ", kind, ": unknown store (sqlite or etcd)"));
}

}  // namespace

int main(int argc, char** argv) {
  // Blocked before any thread starts (gRPC's, which may start as soon as
  // credentials are made, the refusal flusher, the HTTP server's), so that
  // every thread inherits the mask and SIGTERM reaches only sigwait below.
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGTERM);
  sigaddset(&signals, SIGINT);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  using namespace portcullis;
  ParseFlags(argc, argv,
             "portcullis-control: the policy control service.\n\n"
             "  portcullis-control --listen HOST:PORT --state-dir DIR "
             "(--ca FILE --cert FILE --key FILE | --dev)\n"
             "             [--store etcd --etcd-endpoints URL[,URL...] "
             "[--etcd-ca FILE --etcd-cert FILE --etcd-key FILE] [--etcd-prefix /portcullis]]",
             "control/main.cc");
  const std::string state_dir = absl::GetFlag(FLAGS_state_dir);
  const bool plaintext = absl::GetFlag(FLAGS_insecure_plaintext_for_testing);
  const bool dev = absl::GetFlag(FLAGS_dev);

  control::ServiceOptions options;
  options.insecure_plaintext = plaintext;
  options.role_map_path = absl::GetFlag(FLAGS_role_map).empty() ? state_dir + "/roles.yaml"
                                                                : absl::GetFlag(FLAGS_role_map);
  options.stale_after = absl::Seconds(absl::GetFlag(FLAGS_stale_after_seconds));
  options.max_watch_streams = static_cast<uint32_t>(absl::GetFlag(FLAGS_max_watch_streams));
  options.refusal_window = absl::GetFlag(FLAGS_refusal_audit_window);
  const std::vector<std::string> node_certs = absl::GetFlag(FLAGS_dev_node_certs);
  options.shared_agent_certs =
      (dev && node_certs.empty()) || absl::GetFlag(FLAGS_allow_shared_agent_certs);
  if (options.refusal_window < absl::Seconds(1)) {
    return Fail("--refusal-audit-window: at least 1s");
  }
  const absl::Duration tls_refresh = absl::GetFlag(FLAGS_tls_refresh_interval);
  if (tls_refresh < absl::Seconds(1)) return Fail("--tls-refresh-interval: at least 1s");
  auto protected_ports = control::PortList::Parse(absl::GetFlag(FLAGS_protected_ports));
  if (!protected_ports.ok()) {
    return Fail(absl::StrCat("--protected-ports: ", protected_ports.status().message()));
  }
  auto management_ports = control::PortList::Parse(absl::GetFlag(FLAGS_management_ports));
  if (!management_ports.ok()) {
    return Fail(absl::StrCat("--management-ports: ", management_ports.status().message()));
  }
  options.baseline = {*protected_ports, *management_ports};

  std::shared_ptr<grpc::ServerCredentials> credentials;
  if (plaintext) {
    if (dev || !absl::GetFlag(FLAGS_ca).empty()) {
      return Fail("--insecure-plaintext-for-testing cannot be combined with --dev or --ca");
    }
    if (!absl::GetFlag(FLAGS_crl).empty()) {
      return Fail("--crl needs TLS: drop --insecure-plaintext-for-testing");
    }
    LogWarning(
        "INSECURE: serving without TLS and without authentication "
        "(--insecure-plaintext-for-testing); anyone who can connect may change the policy");
    credentials = grpc::InsecureServerCredentials();
  } else {
    control::TlsPaths paths{absl::GetFlag(FLAGS_ca), absl::GetFlag(FLAGS_cert),
                            absl::GetFlag(FLAGS_key)};
    if (dev) {
      if (!paths.ca.empty() || !paths.cert.empty() || !paths.key.empty()) {
        return Fail("--dev makes its own certificates; drop --ca, --cert and --key");
      }
      auto made = control::EnsureDevCertificates(state_dir);
      if (!made.ok()) return Fail(std::string(made.status().message()));
      paths = *made;
      for (const std::string& node : node_certs) {
        if (absl::Status s = control::IssueDevNodeCertificate(state_dir, node); !s.ok()) {
          return Fail(absl::StrCat("--dev-node-certs: ", s.message()));
        }
      }
      if (access(options.role_map_path.c_str(), F_OK) != 0) {
        // 0600 whatever the umask: who holds it decides every role.
        const int fd = open(options.role_map_path.c_str(),
                            O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        if (fd >= 0) {
          const std::string map(control::kDevRoleMap);
          const bool written = fchmod(fd, 0600) == 0 && write(fd, map.data(), map.size()) ==
                                                            static_cast<ssize_t>(map.size());
          close(fd);
          if (!written) return Fail(absl::StrCat("cannot write ", options.role_map_path));
        }
      }
      if (absl::GetFlag(FLAGS_dev_certs_only)) {
        if (auto made = control::EnsureDevAuditKey(state_dir); !made.ok()) {
          return Fail(std::string(made.status().message()));
        }
        std::cout << state_dir << "/tls\n";
        return 0;
      }
      LogWarning("--dev: using throwaway certificates; not for production",
                 {{"tls_dir", state_dir + "/tls"}});
    } else if (absl::GetFlag(FLAGS_dev_certs_only)) {
      return Fail("--dev-certs-only needs --dev");
    } else if (paths.ca.empty() || paths.cert.empty() || paths.key.empty()) {
      return Fail("--ca, --cert and --key are required (or --dev for throwaway certificates)");
    }
    auto tls = control::ReadTlsFiles(paths);
    if (!tls.ok()) return Fail(std::string(tls.status().message()));
    credentials = control::ReloadingServerCredentials(paths, tls_refresh);
    options.crl_path = absl::GetFlag(FLAGS_crl);
    options.ca_path = paths.ca;
  }

  std::string audit_key = absl::GetFlag(FLAGS_audit_signing_key);
  if (audit_key.empty() && dev) {
    auto made = control::EnsureDevAuditKey(state_dir);
    if (!made.ok()) return Fail(std::string(made.status().message()));
    audit_key = *made;
  }
  std::unique_ptr<control::AuditSigner> signer;
  if (!audit_key.empty()) {
    auto loaded = control::AuditSigner::Load(audit_key);
    if (!loaded.ok()) return Fail(std::string(loaded.status().message()));
    signer = *std::move(loaded);
    LogInfo("signing audit entries", {{"key", audit_key}, {"key_id", signer->key_id()}});
  }

  auto store = OpenStore(state_dir);
  if (!store.ok()) return Fail(std::string(store.status().message()));
  if (signer) (*store)->SetAuditSigner(std::move(signer));
  auto registry = std::make_shared<prometheus::Registry>();
  auto service = control::ControlService::Create(**store, options, *registry);
  if (!service.ok()) return Fail(std::string(service.status().message()));

  std::atomic<bool> ready{false};
  std::unique_ptr<HttpServer> http;
  if (const std::string addr = absl::GetFlag(FLAGS_metrics_addr); !addr.empty()) {
    auto started = HttpServer::Start(addr, {registry, (*service)->agents()}, &ready);
    if (!started.ok()) return Fail(std::string(started.status().message()));
    http = *std::move(started);
  }

  const std::string listen = absl::GetFlag(FLAGS_listen);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(listen, credentials, &port);
  builder.RegisterService(service->get());
  builder.SetMaxReceiveMessageSize(control::kMaxMessageBytes);
  builder.SetMaxSendMessageSize(control::kMaxMessageBytes);
  // Bounds against hostile clients: buffers, and streams per connection (an
  // agent needs one stream and a unary call at a time).
  grpc::ResourceQuota quota("portcullis-control");
  quota.Resize(static_cast<size_t>(absl::GetFlag(FLAGS_max_memory_mb)) << 20);
  builder.SetResourceQuota(quota);
  builder.AddChannelArgument(GRPC_ARG_MAX_CONCURRENT_STREAMS, 100);
  // gRPC sets SO_REUSEPORT by default: a second service (another store!) on
  // the same port would silently take half of the agents. Refuse to start.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  // Agents ping idle connections to notice dead ones; allow it.
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS,
                             control::kServiceMinPingIntervalMs);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 20000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 10000);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Fail(absl::StrCat("--listen ", listen, ": cannot listen"));

  // The CRL re-read, and open streams checked again, every --tls-refresh-interval.
  std::mutex check_mu;
  std::condition_variable check_cv;
  bool stopping = false;
  std::thread checker([&] {
    std::unique_lock<std::mutex> lock(check_mu);
    while (!check_cv.wait_for(lock, absl::ToChronoSeconds(tls_refresh), [&] { return stopping; })) {
      lock.unlock();
      (*service)->CheckCredentials();
      lock.lock();
    }
  });

  ready = true;
  LogInfo("serving", {{"listen", listen},
                      {"port", static_cast<int64_t>(port)},
                      {"state_dir", state_dir},
                      {"store", absl::GetFlag(FLAGS_store)},
                      {"tls", !plaintext}});
  int sig = 0;
  sigwait(&signals, &sig);
  LogInfo("shutting down", {{"signal", static_cast<int64_t>(sig)}});
  ready = false;
  {
    std::lock_guard<std::mutex> lock(check_mu);
    stopping = true;
  }
  check_cv.notify_all();
  checker.join();
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(1));
  service->reset();
  std::fflush(nullptr);
  std::_Exit(0);
}
