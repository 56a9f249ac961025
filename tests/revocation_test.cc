// Checks a caller's certificate after its handshake: the CRL file (verified
// against the CA, re-read when it changes, a bad new file never replacing
// a good list) and expiry.
#include "control/revocation.h"

#include <fstream>

#include "control/tls.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "policy/yaml_loader.h"
#include "tests/support/temp_dir.h"
#include "tests/support/test_crl.h"

namespace portcullis::control {
namespace {

using ::portcullis::testing::CertificateSerial;
using ::portcullis::testing::WriteTestCrl;
using ::testing::HasSubstr;

PeerCertificate Peer(const std::string& pem_path) {
  auto pem = policy::ReadTextFile(pem_path);
  EXPECT_TRUE(pem.ok()) << pem.status();
  auto cert = ParsePeerCertificate(pem.ok() ? *pem : "");
  EXPECT_TRUE(cert.ok()) << cert.status();
  return cert.ok() ? *cert : PeerCertificate{};
}

class RevocationListTest : public ::testing::Test {
 protected:
  void SetUp() override { ASSERT_TRUE(EnsureDevCertificates(dir_.path()).ok()); }
  std::string Tls(const std::string& file) const { return dir_.path() + "/tls/" + file; }
  std::string Crl() const { return dir_.path() + "/crl.pem"; }

  testing::TempDir dir_;
};

TEST_F(RevocationListTest, RevokesWhatTheFileListsAndFollowsItsChanges) {
  ASSERT_TRUE(WriteTestCrl(Tls(""), {Tls("editor.crt")}, Crl()).ok());
  auto crl = RevocationList::Open(Crl(), Tls("ca.crt"));
  ASSERT_TRUE(crl.ok()) << crl.status();
  const PeerCertificate editor = Peer(Tls("editor.crt"));
  const PeerCertificate viewer = Peer(Tls("viewer.crt"));
  EXPECT_EQ(editor.serial, *CertificateSerial(Tls("editor.crt")));
  EXPECT_TRUE((*crl)->Revoked(editor));
  EXPECT_FALSE((*crl)->Revoked(viewer));
  const absl::Status refused = CheckPeer(editor, crl->get(), absl::Now());
  EXPECT_TRUE(absl::IsUnauthenticated(refused));
  EXPECT_THAT(refused.message(), HasSubstr(absl::StrCat("serial ", editor.serial)));
  EXPECT_THAT(refused.message(), HasSubstr("revoked by " + Crl()));
  EXPECT_TRUE(CheckPeer(viewer, crl->get(), absl::Now()).ok());

  EXPECT_FALSE((*crl)->Refresh()) << "the file has not changed";
  ASSERT_TRUE(WriteTestCrl(Tls(""), {Tls("viewer.crt")}, Crl()).ok());
  EXPECT_TRUE((*crl)->Refresh());
  EXPECT_FALSE((*crl)->Revoked(editor));
  EXPECT_TRUE((*crl)->Revoked(viewer));

  // A broken CRL push neither unrevokes nor locks everyone out.
  std::ofstream(Crl()) << "-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n";
  EXPECT_FALSE((*crl)->Refresh());
  EXPECT_TRUE((*crl)->Revoked(viewer));
  EXPECT_FALSE((*crl)->Revoked(editor));
}

TEST_F(RevocationListTest, ACrlTheCaDidNotSignIsRefusedNamingTheFlagAndTheFile) {
  testing::TempDir other;
  ASSERT_TRUE(EnsureDevCertificates(other.path()).ok());
  ASSERT_TRUE(WriteTestCrl(other.path() + "/tls", {Tls("editor.crt")}, Crl()).ok());
  auto crl = RevocationList::Open(Crl(), Tls("ca.crt"));
  ASSERT_FALSE(crl.ok());
  EXPECT_THAT(crl.status().message(), HasSubstr("--crl " + Crl()));
  EXPECT_THAT(crl.status().message(), HasSubstr("is not signed by a CA of " + Tls("ca.crt")));

  auto missing = RevocationList::Open(dir_.path() + "/none.pem", Tls("ca.crt"));
  ASSERT_FALSE(missing.ok());
  EXPECT_THAT(missing.status().message(), HasSubstr("--crl " + dir_.path() + "/none.pem"));

  std::ofstream(Crl()) << "not a CRL\n";
  auto empty = RevocationList::Open(Crl(), Tls("ca.crt"));
  ASSERT_FALSE(empty.ok());
  EXPECT_THAT(empty.status().message(), HasSubstr("no PEM CRL"));
}

// A connection outlives the expiry check its handshake made.
TEST_F(RevocationListTest, ACertificateNoLongerHoldsOnceItExpires) {
  ASSERT_TRUE(IssueDevCertificate(Tls(""), {"short", "", absl::Seconds(30)}, Tls("short.crt"),
                                  Tls("short.key"))
                  .ok());
  const PeerCertificate cert = Peer(Tls("short.crt"));
  EXPECT_TRUE(CheckPeer(cert, nullptr, absl::Now()).ok());
  const absl::Status later = CheckPeer(cert, nullptr, absl::Now() + absl::Minutes(1));
  EXPECT_TRUE(absl::IsUnauthenticated(later));
  EXPECT_THAT(later.message(), HasSubstr("expired at"));
}

}  // namespace
}  // namespace portcullis::control
