#include "policy/yaml_loader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <initializer_list>
#include <sstream>

#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/types/span.h"
#include "policy/limits.h"
#include "policy/rules.h"
#include "policy/yaml_tree.h"

namespace portcullis::policy {
namespace {

SourceLocation ToLocation(const YAML::Mark& mark) {
  return SourceLocation{mark.line + 1, mark.column + 1};
}

std::string Index(const std::string& path, size_t i) { return absl::StrCat(path, "[", i, "]"); }
std::string Field(const std::string& path, absl::string_view key) {
  return path.empty() ? std::string(key) : absl::StrCat(path, ".", key);
}

// Walks the YAML tree, recording where each field is and reporting shape errors.
class Reader {
 public:
  Reader(Diagnostics& diags, SourceMap& locations) : diags_(diags), locations_(locations) {}

  void Note(const YamlNode& node, const std::string& path) { locations_.Set(path, node.Mark()); }

  void Fail(const YamlNode& node, const std::string& path, absl::string_view message) {
    diags_.ErrorAt(node.Mark(), path, message);
  }

  // Calls on_field(key, value, path) for every key of a mapping. Unknown and
  // duplicate keys are errors at the key.
  template <typename OnField>
  bool Fields(const YamlNode& node, const std::string& path,
              std::initializer_list<absl::string_view> known, OnField&& on_field) {
    Note(node, path);
    if (!node.IsMap()) {
      Fail(node, path, "expected a mapping");
      return false;
    }
    absl::flat_hash_set<std::string> seen;
    for (size_t i = 0; i < node.size(); ++i) {
      const YamlNode key = node.key(i);
      const YamlNode value = node.value(i);
      if (!key.IsScalar()) {
        Fail(key, path, "keys must be plain words");
        continue;
      }
      const std::string name(key.Scalar());
      const std::string child = Field(path, name);
      if (std::find(known.begin(), known.end(), name) == known.end()) {
        Fail(key, path,
             absl::StrCat("unknown key \"", name,
                          "\" (expected one of: ", absl::StrJoin(known, ", "), ")"));
        continue;
      }
      if (!seen.insert(name).second) {
        Fail(key, child, "duplicate key");
        continue;
      }
      Note(value, child);
      on_field(name, value, child);
    }
    return true;
  }

  std::optional<std::string> String(const YamlNode& node, const std::string& path) {
    Note(node, path);
    if (!node.IsScalar()) {
      Fail(node, path, "expected a string");
      return std::nullopt;
    }
    return std::string(node.Scalar());
  }

  std::optional<uint64_t> Unsigned(const YamlNode& node, const std::string& path) {
    Note(node, path);
    uint64_t value = 0;
    if (!node.IsScalar() || node.Scalar().empty() ||
        node.Scalar().find_first_not_of("0123456789") != std::string::npos ||
        !absl::SimpleAtoi(node.Scalar(), &value)) {
      Fail(node, path, "expected a whole number");
      return std::nullopt;
    }
    return value;
  }

  template <typename Enum>
  std::optional<Enum> Word(const YamlNode& node, const std::string& path,
                           absl::Span<const std::pair<absl::string_view, Enum>> words) {
    auto text = String(node, path);
    if (!text) return std::nullopt;
    for (const auto& [word, value] : words) {
      if (*text == word) return value;
    }
    std::vector<absl::string_view> names;
    for (const auto& w : words) names.push_back(w.first);
    Fail(node, path, absl::StrCat("\"", *text, "\" is not one of: ", absl::StrJoin(names, ", ")));
    return std::nullopt;
  }

  // A sequence of strings (CIDRs, set names).
  void Strings(const YamlNode& node, const std::string& path,
               google::protobuf::RepeatedPtrField<std::string>* out) {
    Note(node, path);
    if (!node.IsSequence()) {
      Fail(node, path, "expected a list");
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const YamlNode item = node[i];
      locations_.AddItem(path, item.Mark());  // every item, so that indices match
      if (item.IsScalar()) {
        out->Add(std::string(item.Scalar()));
      } else {
        Fail(item, Index(path, i), "expected a string");
      }
    }
  }

  void Rate(const YamlNode& node, const std::string& path, v1::Rate* out) {
    Fields(node, path, {"rate", "burst"},
           [&](const std::string& key, const YamlNode& v, const std::string& p) {
             auto n = Unsigned(v, p);
             if (!n) return;
             if (key == "rate")
               out->set_rate(*n);
             else
               out->set_burst(*n);
           });
  }

  // "80", 80 or "30000-32767".
  void Ports(const YamlNode& node, const std::string& path,
             google::protobuf::RepeatedPtrField<v1::PortRange>* out) {
    if (!node.IsSequence()) {
      Fail(node, path, "expected a list of ports or \"FIRST-LAST\" ranges");
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) {
      const std::string p = Index(path, i);
      Note(node[i], p);
      const YamlNode item = node[i];
      const std::string text(item.Scalar());
      const size_t dash = text.find('-');
      uint64_t first = 0;
      uint64_t last = 0;
      auto number = [](absl::string_view s, uint64_t* v) {
        return !s.empty() && s.find_first_not_of("0123456789") == absl::string_view::npos &&
               s.size() <= 5 && absl::SimpleAtoi(s, v);
      };
      const bool ok = dash == std::string::npos
                          ? number(text, &first) && (last = first, true)
                          : number(absl::string_view(text).substr(0, dash), &first) &&
                                number(absl::string_view(text).substr(dash + 1), &last);
      if (!ok) {
        Fail(item, p, absl::StrCat("\"", text, "\" is not a port or a \"FIRST-LAST\" range"));
        continue;
      }
      v1::PortRange* range = out->Add();
      range->set_first(static_cast<uint32_t>(first));
      range->set_last(static_cast<uint32_t>(last));
    }
  }

  void Rule(const YamlNode& node, const std::string& path, v1::PortRule* rule) {
    Fields(node, path, {"ports", "proto", "from", "synRate", "connRate"},
           [&](const std::string& key, const YamlNode& v, const std::string& p) {
             if (key == "ports") {
               Ports(v, p, rule->mutable_ports());
             } else if (key == "proto") {
               if (auto proto = Word<v1::Protocol>(
                       v, p, {{"tcp", v1::PROTOCOL_TCP}, {"udp", v1::PROTOCOL_UDP}})) {
                 rule->set_proto(*proto);
               }
             } else if (key == "from") {
               if (v.IsScalar() && v.Scalar() == "any") {
                 rule->mutable_from()->set_any(true);
               } else if (v.IsSequence()) {
                 Strings(v, p, rule->mutable_from()->mutable_sets());
               } else {
                 Fail(v, p, "expected \"any\" or a list of set names");
               }
             } else if (key == "synRate") {
               Rate(v, p, rule->mutable_syn_rate());
             } else {
               Rate(v, p, rule->mutable_conn_rate());
             }
           });
  }

  void Rules(const YamlNode& node, const std::string& path,
             google::protobuf::RepeatedPtrField<v1::PortRule>* out) {
    if (!node.IsSequence()) {
      Fail(node, path, "expected a list of rules");
      return;
    }
    for (size_t i = 0; i < node.size(); ++i) Rule(node[i], Index(path, i), out->Add());
  }

  void RateLimits(const YamlNode& node, const std::string& path, v1::RateLimits* out) {
    Fields(node, path, {"syn", "connections", "icmp"},
           [&](const std::string& key, const YamlNode& v, const std::string& p) {
             if (key == "syn") {
               v1::SynLimits* syn = out->mutable_syn();
               Fields(v, p, {"perSource", "global", "sourcePrefix", "cookies"},
                      [&](const std::string& k, const YamlNode& sv, const std::string& sp) {
                        if (k == "cookies") {
                          if (auto c = Word<v1::Cookies>(sv, sp, kCookiesWords)) {
                            syn->set_cookies(*c);
                          }
                        } else if (k == "perSource") {
                          Rate(sv, sp, syn->mutable_per_source());
                        } else if (k == "global") {
                          Rate(sv, sp, syn->mutable_global());
                        } else {
                          v1::SourcePrefix* prefix = syn->mutable_source_prefix();
                          Fields(
                              sv, sp, {"ipv4", "ipv6"},
                              [&](const std::string& f, const YamlNode& fv, const std::string& fp) {
                                auto n = Unsigned(fv, fp);
                                if (!n) return;
                                // Out-of-range values are kept for the validator to name.
                                const uint32_t bits = *n > 255 ? 255 : static_cast<uint32_t>(*n);
                                if (f == "ipv4")
                                  prefix->set_ipv4(bits);
                                else
                                  prefix->set_ipv6(bits);
                              });
                        }
                      });
             } else if (key == "connections") {
               v1::ConnectionLimits* conn = out->mutable_connections();
               Fields(v, p, {"perSource"},
                      [&](const std::string&, const YamlNode& cv, const std::string& cp) {
                        Rate(cv, cp, conn->mutable_per_source());
                      });
             } else {
               v1::IcmpLimits* icmp = out->mutable_icmp();
               Fields(v, p, {"perSource"},
                      [&](const std::string&, const YamlNode& iv, const std::string& ip) {
                        Rate(iv, ip, icmp->mutable_per_source());
                      });
             }
           });
  }

  void Spec(const YamlNode& node, const std::string& path, v1::PolicySpec* spec) {
    Fields(node, path,
           {"mode", "defaultAction", "destinations", "sets", "blocklist", "failsafe", "ports",
            "icmp", "fragments", "rateLimits"},
           [&](const std::string& key, const YamlNode& v, const std::string& p) {
             if (key == "mode") {
               if (auto m = Word<v1::Mode>(
                       v, p, {{"enforce", v1::MODE_ENFORCE}, {"audit", v1::MODE_AUDIT}})) {
                 spec->set_mode(*m);
               }
             } else if (key == "defaultAction" || key == "icmp" || key == "fragments") {
               auto a =
                   Word<v1::Action>(v, p, {{"deny", v1::ACTION_DENY}, {"allow", v1::ACTION_ALLOW}});
               if (!a) return;
               if (key == "defaultAction")
                 spec->set_default_action(*a);
               else if (key == "icmp")
                 spec->set_icmp(*a);
               else
                 spec->set_fragments(*a);
             } else if (key == "destinations") {
               Strings(v, p, spec->mutable_destinations());
             } else if (key == "blocklist") {
               Strings(v, p, spec->mutable_blocklist());
             } else if (key == "sets") {
               if (!v.IsMap()) {
                 Fail(v, p, "expected a mapping of set names to CIDR lists");
                 return;
               }
               absl::flat_hash_set<std::string> seen;
               for (size_t i = 0; i < v.size(); ++i) {
                 const YamlNode key = v.key(i);
                 if (!key.IsScalar()) {
                   Fail(key, p, "set names must be plain words");
                   continue;
                 }
                 const std::string name(key.Scalar());
                 const std::string sp = Field(p, name);
                 if (!seen.insert(name).second) {
                   Fail(key, sp, absl::StrCat("set \"", name, "\" is defined twice"));
                   continue;
                 }
                 Note(key, sp);
                 v1::CidrSet* set = spec->add_sets();
                 set->set_name(name);
                 Strings(v.value(i), sp, set->mutable_cidrs());
                 locations_.Set(sp, key.Mark());  // the name, not the list
               }
             } else if (key == "failsafe") {
               Rules(v, p, spec->mutable_failsafe());
             } else if (key == "ports") {
               Rules(v, p, spec->mutable_ports());
             } else {
               RateLimits(v, p, spec->mutable_rate_limits());
             }
           });
  }

  void Document(const YamlNode& root, v1::Policy* policy) {
    Fields(root, "", {"apiVersion", "kind", "metadata", "spec"},
           [&](const std::string& key, const YamlNode& v, const std::string& p) {
             if (key == "apiVersion") {
               if (auto s = String(v, p)) policy->set_api_version(*s);
             } else if (key == "kind") {
               if (auto s = String(v, p)) policy->set_kind(*s);
             } else if (key == "metadata") {
               Fields(v, p, {"name"},
                      [&](const std::string&, const YamlNode& nv, const std::string& np) {
                        if (auto s = String(nv, np)) policy->mutable_metadata()->set_name(*s);
                      });
             } else {
               Spec(v, p, policy->mutable_spec());
             }
           });
  }

 private:
  Diagnostics& diags_;
  SourceMap& locations_;
};

// Where the text stops being UTF-8, if it does. Policies become protobuf
// strings, which must be UTF-8 (found by fuzzing: the wire refused such a
// policy that validate had accepted).
std::optional<SourceLocation> FirstInvalidUtf8(absl::string_view text) {
  SourceLocation at{1, 1};
  for (size_t i = 0; i < text.size();) {
    const auto c = static_cast<uint8_t>(text[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    bool ok = n > 0 && i + n <= text.size();
    for (size_t k = 1; ok && k < n; ++k) ok = (static_cast<uint8_t>(text[i + k]) >> 6) == 0x2;
    if (ok && n > 1) {
      // Overlong forms, surrogates and code points past U+10FFFF.
      const auto c1 = static_cast<uint8_t>(text[i + 1]);
      ok = !(c == 0xc0 || c == 0xc1 || (c == 0xe0 && c1 < 0xa0) || (c == 0xed && c1 >= 0xa0) ||
             (c == 0xf0 && c1 < 0x90) || (c == 0xf4 && c1 >= 0x90) || c > 0xf4);
    }
    if (!ok) return at;
    if (c == '\n') {
      ++at.line;
      at.column = 1;
    } else {
      ++at.column;
    }
    i += n;
  }
  return std::nullopt;
}

}  // namespace

std::optional<LoadedPolicy> ParsePolicyYaml(absl::string_view text, Diagnostics& diags) {
  // The bound first: nothing is spent on text over it.
  if (text.size() > kMaxPolicyBytes) {
    diags.ErrorAt(SourceLocation{1, 1}, "",
                  absl::StrCat("the policy is ", text.size(), " bytes; the limit is ",
                               kMaxPolicyBytes, " (", kMaxPolicyBytes >> 20, " MiB)"));
    return std::nullopt;
  }
  if (std::optional<SourceLocation> bad = FirstInvalidUtf8(text)) {
    diags.ErrorAt(*bad, "", "the file is not valid UTF-8 here");
    return std::nullopt;
  }
  YamlTree tree;
  try {
    tree = YamlTree::Parse(text, kMaxAliasNodes);
  } catch (const YAML::Exception& e) {
    diags.ErrorAt(ToLocation(e.mark), "", e.msg);
    return std::nullopt;
  }
  if (tree.alias_limit()) {
    diags.ErrorAt(*tree.alias_limit(), "",
                  absl::StrCat("aliases here expand to more than ", kMaxAliasNodes,
                               " YAML nodes, the limit: write large lists out once (a set "
                               "can be used by many rules)"));
    return std::nullopt;
  }
  const YamlNode doc = tree.root();
  const std::optional<SourceLocation>& second_document = tree.second_document();
  if (doc.IsNull()) {
    diags.ErrorAt(SourceLocation{1, 1}, "", "the document is empty");
    return std::nullopt;
  }
  if (second_document) {
    diags.ErrorAt(*second_document, "", "a policy file holds exactly one YAML document");
  }
  LoadedPolicy loaded;
  Reader reader(diags, loaded.locations);
  reader.Document(doc, &loaded.policy);
  return loaded;
}

absl::StatusOr<std::string> ReadTextFile(const std::string& path, int extra_flags) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer (it hung the
  // agent, deaf to SIGTERM); only regular files are read, and only up to
  // the policy limit (/dev/zero would fill memory).
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY | extra_flags);
  if (fd < 0) {
    const int err = errno;
    const std::string why = absl::StrCat(path, ": ", std::strerror(err));
    if (err == ENOENT) return absl::NotFoundError(why);
    if (err == EACCES) return absl::PermissionDeniedError(why);
    if (err == ELOOP)
      return absl::PermissionDeniedError(absl::StrCat(path, ": is a symbolic link"));
    return absl::UnavailableError(why);
  }
  absl::Cleanup close_fd = [fd] { close(fd); };
  struct stat st;
  if (fstat(fd, &st)) return absl::UnavailableError(absl::StrCat(path, ": ", std::strerror(errno)));
  if (!S_ISREG(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  if (static_cast<uint64_t>(st.st_size) > kMaxPolicyBytes) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", st.st_size, " bytes; the limit is ",
                                                   kMaxPolicyBytes, " (", kMaxPolicyBytes >> 20,
                                                   " MiB)"));
  }
  std::string out;
  char buf[1 << 16];
  for (;;) {
    const ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return absl::UnavailableError(absl::StrCat(path, ": ", std::strerror(errno)));
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
    if (out.size() > kMaxPolicyBytes) {  // it grew while being read
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": more than ", kMaxPolicyBytes, " bytes, the limit"));
    }
  }
  return out;
}

}  // namespace portcullis::policy
