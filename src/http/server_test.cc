// Tests of the HTTP server over real sockets on 127.0.0.1, port 0.
#include "http/server.h"

#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>

#include <gtest/gtest.h>

#include "support/http_client.h"

namespace tally::http {
namespace {

using tally::testing::HttpClient;
using tally::testing::HttpResponse;

// Echoes the request as "METHOD PATH BODY" and lets individual tests swap the handler.
Response echo(const Request& request) {
  Response r;
  r.content_type = "text/plain";
  r.body = request.method + " " + request.path + " " + request.body;
  return r;
}

class ServerTest : public ::testing::Test {
 protected:
  void start(ServerOptions options = {}, Handler handler = nullptr) {
    if (!handler) {
      handler = [](Request&& request, Responder respond) {
        respond(echo(request));
      };
    }
    start_server(options, [&](ServerOptions o) { return std::make_unique<Server>(o, handler); });
  }

  // A server whose heads go to `admit` first.
  void start_admitting(ServerOptions options, Admit admit) {
    start_server(options, [&](ServerOptions o) { return std::make_unique<Server>(o, admit); });
  }

  template <typename Make>
  void start_server(ServerOptions options, Make make) {
    options.port = 0;
    if (options.threads == 0) {
      options.threads = 2;
    }
    server_ = make(options);
    Status status = server_->start();
    ASSERT_TRUE(status.ok()) << status.to_string();
    ASSERT_NE(server_->port(), 0);
  }

  std::unique_ptr<Server> server_;
};

TEST_F(ServerTest, GetAndPostAreEchoed) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse get = c.request("GET", "/v1/things");
  EXPECT_EQ(get.status, 200) << get.body;
  EXPECT_EQ(get.body, "GET /v1/things ");
  HttpResponse post = c.request("POST", "/v1/events", R"({"a":1})");
  EXPECT_EQ(post.status, 200) << post.body;
  EXPECT_EQ(post.body, R"(POST /v1/events {"a":1})");
}

TEST_F(ServerTest, EveryResponseCarriesServerTypeAndLength) {
  start({}, [](Request&&, Responder respond) {
    Response r;
    r.status = 201;
    r.body = R"({"ok":true})";
    r.headers = {{"X-Request-Id", "abc"}, {"Content-Length", "999"}, {"Server", "other"}};
    respond(std::move(r));
  });
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/");
  EXPECT_EQ(r.status, 201);
  EXPECT_EQ(r.header("server"), "tally");
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("content-length"), "11");
  EXPECT_EQ(r.header("x-request-id"), "abc");
  int servers = 0;
  for (const auto& h : r.headers) {
    servers += h.first == "Server" ? 1 : 0;
  }
  EXPECT_EQ(servers, 1) << "a handler's reserved header must not be written";
}

TEST_F(ServerTest, NoContentHasNoBodyHeaders) {
  start({}, [](Request&&, Responder respond) {
    Response r;
    r.status = 204;
    r.body = "ignored";
    respond(std::move(r));
  });
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("DELETE", "/x");
  EXPECT_EQ(r.status, 204);
  EXPECT_FALSE(r.has_header("content-length"));
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(c.request("GET", "/").status, 204) << "connection stays usable";
  EXPECT_EQ(c.connections_opened(), 1);
}

TEST_F(ServerTest, HeadHasLengthButNoBody) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("HEAD", "/abc");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("content-length"), std::to_string(std::string("HEAD /abc ").size()));
  EXPECT_EQ(r.body, "");
  EXPECT_EQ(c.request("GET", "/").body, "GET / ");
  EXPECT_EQ(c.connections_opened(), 1);
}

TEST_F(ServerTest, KeepAliveServesSeveralRequestsOnOneConnection) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  for (int i = 0; i < 5; ++i) {
    HttpResponse r = c.request("POST", "/n", std::to_string(i));
    ASSERT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "POST /n " + std::to_string(i));
    EXPECT_FALSE(r.has_header("connection"));
  }
  EXPECT_EQ(c.connections_opened(), 1);
}

TEST_F(ServerTest, PipelinedRequestsAreAnsweredInOrder) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("GET /one HTTP/1.1\r\nHost: x\r\n\r\n"
                       "POST /two HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"),
            "");
  HttpResponse first = c.read_response();
  HttpResponse second = c.read_response();
  EXPECT_EQ(first.body, "GET /one ");
  EXPECT_EQ(second.body, "POST /two abc");
}

TEST_F(ServerTest, ConnectionCloseIsHonoured) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/", {}, {{"Connection", "close"}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.wait_closed_by_peer(2000));
}

TEST_F(ServerTest, Http10ClosesUnlessKeepAliveAsked) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("GET /old HTTP/1.0\r\n\r\n"), "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "GET /old ");
  EXPECT_TRUE(c.wait_closed_by_peer(2000));

  HttpClient k("127.0.0.1", server_->port());
  ASSERT_EQ(k.send_raw("GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), "");
  HttpResponse first = k.read_response();
  EXPECT_EQ(first.header("connection"), "keep-alive");
  ASSERT_EQ(k.send_raw("GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"), "");
  EXPECT_EQ(k.read_response().body, "GET /b ");
  EXPECT_EQ(k.connections_opened(), 1);
}

TEST_F(ServerTest, ResponderCalledLaterFromAnotherThread) {
  std::mutex mu;
  std::vector<std::thread> threads;
  start({}, [&](Request&& request, Responder respond) {
    std::lock_guard<std::mutex> lock(mu);
    threads.emplace_back([r = echo(request), respond = std::move(respond)]() mutable {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
      respond(std::move(r));
    });
  });
  HttpClient c("127.0.0.1", server_->port());
  for (int i = 0; i < 3; ++i) {
    HttpResponse r = c.request("POST", "/later", "x" + std::to_string(i));
    EXPECT_EQ(r.status, 200) << r.body;
    EXPECT_EQ(r.body, "POST /later x" + std::to_string(i));
  }
  EXPECT_EQ(c.connections_opened(), 1);
  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : threads) {
    t.join();
  }
}

TEST_F(ServerTest, SecondResponderCallIsIgnored) {
  start({}, [](Request&&, Responder respond) {
    Response a;
    a.body = "first";
    respond(a);
    Response b;
    b.body = "second";
    respond(b);
  });
  HttpClient c("127.0.0.1", server_->port());
  EXPECT_EQ(c.request("GET", "/").body, "first");
  EXPECT_EQ(c.request("GET", "/").body, "first");
}

TEST_F(ServerTest, HandlerExceptionAnswers500) {
  start({}, [](Request&&, Responder) { throw std::runtime_error("boom"); });
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find(R"("error":"INTERNAL_ERROR")"), std::string::npos) << r.body;
  EXPECT_EQ(c.request("GET", "/").status, 500) << "the connection survives";
}

TEST_F(ServerTest, DroppedResponderAnswers500) {
  start({}, [](Request&&, Responder) {});
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find(R"("error":"INTERNAL_ERROR")"), std::string::npos) << r.body;
}

TEST_F(ServerTest, ResponderAfterStopIsHarmless) {
  std::promise<Responder> got;
  ServerOptions options;
  options.stop_grace_ms = 100;
  start(options, [&](Request&&, Responder respond) { got.set_value(std::move(respond)); });
  std::future<HttpResponse> response = std::async(std::launch::async, [port = server_->port()] {
    HttpClient c("127.0.0.1", port);
    return c.request("GET", "/never");
  });
  Responder respond = got.get_future().get();
  server_->stop();
  EXPECT_EQ(response.get().status, 0) << "the connection is closed without an answer";
  respond(Response{});  // after stop
  server_.reset();
  respond(Response{});  // after the server is gone
}

TEST_F(ServerTest, OversizedBodyAnswers413AndCloses) {
  ServerOptions options;
  options.body_bytes_max = 1024;
  std::atomic<int> handled{0};
  start(options, [&](Request&& request, Responder respond) {
    handled++;
    respond(echo(request));
  });
  HttpClient c("127.0.0.1", server_->port());
  EXPECT_EQ(c.request("POST", "/", std::string(1024, 'a')).status, 200) << "at the limit is fine";
  HttpResponse r = c.request("POST", "/", std::string(4096, 'a'));
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body, R"({"error":"PAYLOAD_TOO_LARGE","message":"request body exceeds 1024 bytes"})");
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_EQ(r.header("connection"), "close");
  EXPECT_TRUE(c.wait_closed_by_peer(3000));
  EXPECT_EQ(handled.load(), 1);
}

TEST_F(ServerTest, OversizedChunkedBodyAnswers413) {
  ServerOptions options;
  options.body_bytes_max = 10;
  start(options);
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "8\r\n12345678\r\n8\r\n12345678\r\n0\r\n\r\n"),
            "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 413);
  EXPECT_EQ(r.body, R"({"error":"PAYLOAD_TOO_LARGE","message":"request body exceeds 10 bytes"})");
}

TEST_F(ServerTest, ChunkedBodyIsDecoded) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
            "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /c hello world");
}

TEST_F(ServerTest, ExpectContinueGetsInterimResponse) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                       "Expect: 100-continue\r\n\r\n"),
            "");
  HttpResponse interim = c.read_response();
  EXPECT_EQ(interim.status, 100);
  ASSERT_EQ(c.send_raw("abcde"), "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /e abcde");
}

TEST_F(ServerTest, ExpectContinueOverLimitGets413Instead) {
  ServerOptions options;
  options.body_bytes_max = 100;
  start(options);
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
                       "Expect: 100-continue\r\n\r\n"),
            "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 413);
}

TEST_F(ServerTest, MalformedRequestAnswers400AndCloses) {
  start();
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("THIS IS NOT HTTP\r\n\r\n"), "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body.find(R"("error":"BAD_REQUEST")"), std::string::npos) << r.body;
  EXPECT_EQ(r.header("content-type"), "application/json");
  EXPECT_TRUE(c.wait_closed_by_peer(3000));

  HttpClient bad_length("127.0.0.1", server_->port());
  ASSERT_EQ(bad_length.send_raw("POST / HTTP/1.1\r\nContent-Length: nope\r\n\r\n"), "");
  EXPECT_EQ(bad_length.read_response().status, 400);
}

TEST_F(ServerTest, HeaderTooLargeAnswers431) {
  ServerOptions options;
  options.header_bytes_max = 1024;
  start(options);
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/", {}, {{"X-Big", std::string(4096, 'b')}});
  EXPECT_EQ(r.status, 431);
  EXPECT_NE(r.body.find("1024"), std::string::npos) << r.body;
}

TEST_F(ServerTest, PathAndQueryAreDecoded) {
  Request seen;
  start({}, [&](Request&& request, Responder respond) {
    seen = std::move(request);
    respond(Response{});
  });
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.request("GET", "/v1/a%20b/c%2Fd?x=1&y=hello+world&z=%E2%9C%93&flag&&x=2").status,
            200);
  EXPECT_EQ(seen.target, "/v1/a%20b/c%2Fd?x=1&y=hello+world&z=%E2%9C%93&flag&&x=2");
  EXPECT_EQ(seen.path, "/v1/a b/c/d");
  using Pairs = std::vector<std::pair<std::string, std::string>>;
  EXPECT_EQ(
      seen.query,
      (Pairs{{"x", "1"}, {"y", "hello world"}, {"z", "\xE2\x9C\x93"}, {"flag", ""}, {"x", "2"}}));
  ASSERT_NE(seen.query_param("x"), nullptr);
  EXPECT_EQ(*seen.query_param("x"), "1");
  EXPECT_EQ(seen.query_param("missing"), nullptr);
  EXPECT_EQ(seen.remote_address, "127.0.0.1");

  ASSERT_EQ(c.request("GET", "/plus+stays").status, 200);
  EXPECT_EQ(seen.path, "/plus+stays");
  EXPECT_TRUE(seen.query.empty());

  ASSERT_EQ(c.request("GET", "http://example.com/abs%21?q=1").status, 200);
  EXPECT_EQ(seen.path, "/abs!");
  EXPECT_EQ(seen.target, "/abs%21?q=1") << "an absolute-form target is given in origin form";
  ASSERT_NE(seen.query_param("q"), nullptr);
  EXPECT_EQ(*seen.query_param("q"), "1");
  ASSERT_EQ(c.request("GET", "http://example.com?q=2").status, 200);
  EXPECT_EQ(seen.target, "/?q=2");
  EXPECT_EQ(seen.path, "/");

  EXPECT_EQ(c.request("GET", "no-slash").status, 400);
}

TEST_F(ServerTest, BadPercentEncodingAnswers400) {
  start();
  for (const char* target : {"/a%zz", "/a%2", "/a?b=%", "/nul%00"}) {
    HttpClient c("127.0.0.1", server_->port());
    HttpResponse r = c.request("GET", target);
    EXPECT_EQ(r.status, 400) << target;
    EXPECT_NE(r.body.find(R"("error":"BAD_REQUEST")"), std::string::npos) << r.body;
  }
}

TEST_F(ServerTest, HeaderLookupIsCaseInsensitive) {
  Request seen;
  start({}, [&](Request&& request, Responder respond) {
    seen = std::move(request);
    respond(Response{});
  });
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(
      c.request("GET", "/", {}, {{"X-Api-Key", "k1"}, {"X-TWICE", "a"}, {"x-twice", "b"}}).status,
      200);
  ASSERT_NE(seen.header("x-api-key"), nullptr);
  EXPECT_EQ(*seen.header("x-api-key"), "k1");
  ASSERT_NE(seen.header("x-twice"), nullptr);
  EXPECT_EQ(*seen.header("x-twice"), "a");
  EXPECT_EQ(seen.header("x-missing"), nullptr);
  int twice = 0;
  for (const auto& [name, value] : seen.headers) {
    EXPECT_EQ(name.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ"), std::string::npos) << name;
    twice += name == "x-twice" ? 1 : 0;
  }
  EXPECT_EQ(twice, 2);
}

TEST_F(ServerTest, ConcurrentClientsAreAllAnswered) {
  start();
  constexpr int kThreads = 8;
  constexpr int kRequests = 200;
  std::atomic<int> ok{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t, port = server_->port()] {
      HttpClient c("127.0.0.1", port);
      for (int i = 0; i < kRequests; ++i) {
        std::string body = std::to_string(t) + ":" + std::to_string(i);
        HttpResponse r = c.request("POST", "/c", body);
        if (r.status == 200 && r.body == "POST /c " + body) {
          ok++;
        }
      }
    });
  }
  for (auto& t : threads) {
    t.join();
  }
  EXPECT_EQ(ok.load(), kThreads * kRequests);
}

TEST_F(ServerTest, StopWithIdleConnectionsIsPrompt) {
  start();
  std::vector<std::unique_ptr<HttpClient>> clients;
  for (int i = 0; i < 10; ++i) {
    clients.push_back(std::make_unique<HttpClient>("127.0.0.1", server_->port()));
    ASSERT_EQ(clients.back()->request("GET", "/").status, 200);
  }
  auto begin = std::chrono::steady_clock::now();
  server_->stop();
  auto took = std::chrono::steady_clock::now() - begin;
  EXPECT_LT(took, std::chrono::milliseconds(500));
  EXPECT_TRUE(clients[0]->wait_closed_by_peer(1000));
  server_->stop();  // idempotent
}

TEST_F(ServerTest, StopLetsInFlightRequestFinish) {
  std::vector<std::thread> threads;
  std::promise<void> got;
  start({}, [&](Request&& request, Responder respond) {
    got.set_value();
    threads.emplace_back([r = echo(request), respond = std::move(respond)]() mutable {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
      respond(std::move(r));
    });
  });
  std::future<HttpResponse> response = std::async(std::launch::async, [port = server_->port()] {
    HttpClient c("127.0.0.1", port);
    return c.request("GET", "/slow");
  });
  got.get_future().wait();
  server_->stop();
  HttpResponse r = response.get();
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.header("connection"), "close");
  for (auto& t : threads) {
    t.join();
  }
}

TEST_F(ServerTest, StartOnPortInUseFails) {
  start();
  ServerOptions options;
  options.port = server_->port();
  Server second(options, [](Request&&, Responder respond) { respond(Response{}); });
  Status status = second.start();
  EXPECT_EQ(status.code(), StatusCode::kIOError);
  EXPECT_NE(status.message().find("127.0.0.1:" + std::to_string(server_->port())),
            std::string::npos)
      << status.message();
  EXPECT_EQ(second.port(), 0);
}

TEST_F(ServerTest, BadOptionsAreRejected) {
  ServerOptions options;
  options.port = 0;
  options.threads = -1;
  Server bad(options, [](Request&&, Responder respond) { respond(Response{}); });
  EXPECT_EQ(bad.start().code(), StatusCode::kInvalidArgument);

  ServerOptions no_headers;
  no_headers.port = 0;
  no_headers.header_bytes_max = 0;
  Server zero(no_headers, [](Request&&, Responder respond) { respond(Response{}); });
  EXPECT_EQ(zero.start().code(), StatusCode::kInvalidArgument);
}

// Each refusal of start() by its whole message; a host name is resolved.
TEST_F(ServerTest, StartNamesEachRefusal) {
  auto refusal = [](ServerOptions options) {
    options.port = 0;
    Server s(options, [](Request&&, Responder respond) { respond(Response{}); });
    return s.start();
  };
  ServerOptions options;
  options.threads = 257;
  Status s = refusal(options);
  EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(s.message(), "http server: threads must be between 0 and 256");
  const std::string positive =
      "http server: connections_max, connections_per_address_max, header_bytes_max, "
      "idle_timeout_ms and header_timeout_ms must be positive";
  for (int i = 0; i < 5; ++i) {
    ServerOptions zero;
    zero.connections_max = i == 0 ? 0 : zero.connections_max;
    zero.connections_per_address_max = i == 1 ? 0 : zero.connections_per_address_max;
    zero.header_bytes_max = i == 2 ? 0 : zero.header_bytes_max;
    zero.idle_timeout_ms = i == 3 ? 0 : zero.idle_timeout_ms;
    zero.header_timeout_ms = i == 4 ? 0 : zero.header_timeout_ms;
    s = refusal(zero);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument) << i;
    EXPECT_EQ(s.message(), positive) << i;
  }

  start();
  ServerOptions taken;
  taken.port = server_->port();
  Server second(taken, [](Request&&, Responder respond) { respond(Response{}); });
  s = second.start();
  EXPECT_EQ(s.message(), "http server: cannot bind 127.0.0.1:" + std::to_string(server_->port()) +
                             ": Address already in use");
  EXPECT_EQ(server_->start().message(), "http server: start() called twice");

  ServerOptions named;
  named.host = "localhost";
  named.port = 0;
  named.threads = 1;
  Server by_name(named, [](Request&&, Responder respond) { respond(Response{}); });
  // (It listens on the name's first address, 127.0.0.1 or ::1 as the system lists them.)
  ASSERT_TRUE(by_name.start().ok());
  EXPECT_NE(by_name.port(), 0);
}

TEST_F(ServerTest, ConnectionsBeyondTheBoundAreClosed) {
  ServerOptions options;
  options.connections_max = 2;
  start(options);
  HttpClient a("127.0.0.1", server_->port());
  HttpClient b("127.0.0.1", server_->port());
  ASSERT_EQ(a.request("GET", "/").status, 200);
  ASSERT_EQ(b.request("GET", "/").status, 200);
  HttpClient c("127.0.0.1", server_->port(), 2000);
  EXPECT_EQ(c.request("GET", "/").status, 0);
  a.close();
  // The slot comes back once the server has seen the close.
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    HttpClient d("127.0.0.1", server_->port(), 2000);
    status = d.request("GET", "/").status;
  }
  EXPECT_EQ(status, 200);
}

TEST_F(ServerTest, IdleConnectionsTimeOut) {
  ServerOptions options;
  options.idle_timeout_ms = 100;
  start(options);
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.request("GET", "/").status, 200);
  auto begin = std::chrono::steady_clock::now();
  EXPECT_TRUE(c.wait_closed_by_peer(3000));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(2000));
  EXPECT_EQ(c.request("GET", "/").status, 200) << "the client reconnects";
}

// ---- the head stage ------------------------------------------------------------------------

// Refuses every request without "x-key: good", as the API refuses a request without a valid key.
struct KeyGate {
  Admission operator()(const Request& head) {
    ++admits;
    if (!head.body.empty()) {
      ++heads_with_body;
    }
    const std::string* key = head.header("x-key");
    if (key == nullptr || *key != "good") {
      Admission a;
      a.refusal = Response{};
      a.refusal->status = 401;
      a.refusal->body = R"({"error":"UNAUTHORIZED","message":"no key"})";
      return a;
    }
    Admission a;
    a.handler = [this](Request&& request, Responder respond) {
      ++handled;
      respond(echo(request));
    };
    return a;
  }

  std::atomic<int> admits{0};
  std::atomic<int> heads_with_body{0};
  std::atomic<int> handled{0};
};

TEST_F(ServerTest, RefusedHeadIsAnsweredWithoutReadingTheBody) {
  KeyGate gate;
  ServerOptions options;
  options.body_bytes_max = 16 << 20;
  start_admitting(options, std::ref(gate));
  HttpClient c("127.0.0.1", server_->port(), 5000);
  // Announces 9 MiB and sends 64 KiB of it: the answer must come without the rest.
  ASSERT_EQ(c.send_raw("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 9437184\r\n\r\n" +
                       std::string(64 * 1024, 'a')),
            "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_EQ(r.body, R"({"error":"UNAUTHORIZED","message":"no key"})");
  EXPECT_EQ(r.header("connection"), "close") << "the unread body ends the connection";
  EXPECT_TRUE(c.wait_closed_by_peer(5000));
  EXPECT_EQ(gate.handled.load(), 0);
  EXPECT_EQ(gate.heads_with_body.load(), 0);

  HttpClient ok("127.0.0.1", server_->port());
  HttpResponse admitted = ok.request("POST", "/up", "payload", {{"x-key", "good"}});
  EXPECT_EQ(admitted.status, 200);
  EXPECT_EQ(admitted.body, "POST /up payload");
  EXPECT_EQ(gate.handled.load(), 1);
}

TEST_F(ServerTest, RefusedHeadWithoutBodyKeepsTheConnection) {
  KeyGate gate;
  start_admitting({}, std::ref(gate));
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse refused = c.request("GET", "/x");
  EXPECT_EQ(refused.status, 401);
  EXPECT_FALSE(refused.has_header("connection"));
  EXPECT_EQ(c.request("GET", "/x", {}, {{"x-key", "good"}}).status, 200);
  HttpResponse empty_post = c.request("POST", "/x");  // Content-Length: 0: nothing left unread
  EXPECT_EQ(empty_post.status, 401);
  EXPECT_EQ(c.request("GET", "/y", {}, {{"x-key", "good"}}).body, "GET /y ");
  EXPECT_EQ(c.connections_opened(), 1);
}

TEST_F(ServerTest, HeadIsAdmittedBeforeTheBodyArrives) {
  std::promise<void> admitted;
  std::atomic<bool> once{false};
  start_admitting({}, [&](const Request&) {
    if (!once.exchange(true)) {
      admitted.set_value();
    }
    Admission a;
    a.handler = [](Request&& request, Responder respond) {
      respond(echo(request));
    };
    return a;
  });
  HttpClient c("127.0.0.1", server_->port());
  ASSERT_EQ(c.send_raw("POST /later HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n"), "");
  ASSERT_EQ(admitted.get_future().wait_for(std::chrono::seconds(5)), std::future_status::ready)
      << "Admit must see the head while the body is still to come";
  ASSERT_EQ(c.send_raw("abcde"), "");
  HttpResponse r = c.read_response();
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /later abcde");
}

TEST_F(ServerTest, ExpectContinueIsSentOnlyToAdmittedHeads) {
  KeyGate gate;
  start_admitting({}, std::ref(gate));
  HttpClient refused("127.0.0.1", server_->port());
  ASSERT_EQ(refused.send_raw("POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                             "Expect: 100-continue\r\n\r\n"),
            "");
  HttpResponse r = refused.read_response();
  EXPECT_EQ(r.status, 401) << "no 100 Continue before the refusal";
  EXPECT_EQ(r.header("connection"), "close");

  HttpClient admitted("127.0.0.1", server_->port());
  ASSERT_EQ(admitted.send_raw("POST /e HTTP/1.1\r\nHost: x\r\nX-Key: good\r\nContent-Length: 5\r\n"
                              "Expect: 100-continue\r\n\r\n"),
            "");
  EXPECT_EQ(admitted.read_response().status, 100);
  ASSERT_EQ(admitted.send_raw("abcde"), "");
  HttpResponse ok = admitted.read_response();
  EXPECT_EQ(ok.status, 200);
  EXPECT_EQ(ok.body, "POST /e abcde");
}

TEST_F(ServerTest, AdmitExceptionAnswers500) {
  start_admitting({}, [](const Request&) -> Admission { throw std::runtime_error("boom"); });
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/");
  EXPECT_EQ(r.status, 500);
  EXPECT_NE(r.body.find(R"("error":"INTERNAL_ERROR")"), std::string::npos) << r.body;
}

// ---- framing (RFC 9112) --------------------------------------------------------------------

// Sends `raw` on a fresh connection and reads the answer.
HttpResponse send_once(std::uint16_t port, const std::string& raw) {
  HttpClient c("127.0.0.1", port);
  if (std::string error = c.send_raw(raw); !error.empty()) {
    HttpResponse failed;
    failed.body = error;
    return failed;
  }
  return c.read_response();
}

TEST_F(ServerTest, TransferCodingOtherThanChunkedIs501) {
  std::atomic<int> handled{0};
  start({}, [&](Request&& request, Responder respond) {
    ++handled;
    respond(echo(request));
  });
  const std::string body = "5\r\nhello\r\n0\r\n\r\n";
  for (const char* te : {"Transfer-Encoding: gzip, chunked\r\n",
                         "Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
                         "Transfer-Encoding: deflate,chunked\r\n"}) {
    HttpClient c("127.0.0.1", server_->port());
    ASSERT_EQ(c.send_raw("POST /t HTTP/1.1\r\nHost: x\r\n" + std::string(te) + "\r\n" + body), "");
    HttpResponse r = c.read_response();
    EXPECT_EQ(r.status, 501) << te;
    EXPECT_NE(r.body.find(R"("error":"NOT_IMPLEMENTED")"), std::string::npos) << r.body;
    EXPECT_EQ(r.header("content-type"), "application/json");
    EXPECT_TRUE(c.wait_closed_by_peer(3000)) << te;
  }
  EXPECT_EQ(handled.load(), 0);
  HttpResponse chunked = send_once(
      server_->port(), "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n" + body);
  EXPECT_EQ(chunked.status, 200);
  EXPECT_EQ(chunked.body, "POST /t hello");
}

TEST_F(ServerTest, UnframedTransferEncodingIs400) {
  std::atomic<int> handled{0};
  start({}, [&](Request&& request, Responder respond) {
    ++handled;
    respond(echo(request));
  });
  // Without chunked last the body's end is unknown (RFC 9112 6.3); chunked twice is invalid
  // (7); HTTP/1.0 has no transfer codings (6.1).
  for (const char* head :
       {"POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
        "POST /t HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\n",
        "POST /t HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"}) {
    HttpResponse r = send_once(server_->port(), std::string(head) + "5\r\nhello\r\n0\r\n\r\n");
    EXPECT_EQ(r.status, 400) << head;
    EXPECT_NE(r.body.find(R"("error":"BAD_REQUEST")"), std::string::npos) << r.body;
  }
  EXPECT_EQ(handled.load(), 0);
}

TEST_F(ServerTest, Http11NeedsExactlyOneHost) {
  start();
  HttpResponse none = send_once(server_->port(), "GET /h HTTP/1.1\r\n\r\n");
  EXPECT_EQ(none.status, 400);
  EXPECT_NE(none.body.find("Host"), std::string::npos) << none.body;
  HttpResponse two = send_once(server_->port(), "GET /h HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n");
  EXPECT_EQ(two.status, 400);
  EXPECT_NE(two.body.find("more than one Host"), std::string::npos) << two.body;
  EXPECT_EQ(send_once(server_->port(), "GET /h HTTP/1.1\r\nHost: a/b\r\n\r\n").status, 400);
  EXPECT_EQ(send_once(server_->port(), "GET /h HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n").status,
            400);

  HttpResponse old = send_once(server_->port(), "GET /h HTTP/1.0\r\n\r\n");
  EXPECT_EQ(old.status, 200) << "HTTP/1.0 may leave Host out";
  EXPECT_EQ(send_once(server_->port(), "GET /h HTTP/1.1\r\nHost: \r\n\r\n").status, 200)
      << "an empty Host is valid (RFC 9110 7.2)";
  EXPECT_EQ(send_once(server_->port(), "GET /h HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n").status, 200);
}

TEST_F(ServerTest, AbsoluteFormTargetIsServedByItsPath) {
  std::mutex mu;
  std::vector<std::string> targets;
  KeyGate gate;
  start_admitting({}, [&](const Request& head) {
    std::lock_guard<std::mutex> lock(mu);
    targets.push_back(head.target + " " + head.path);
    return gate(head);
  });
  HttpResponse r = send_once(server_->port(),
                             "POST http://127.0.0.1:8080/v1/events?x=1 HTTP/1.1\r\nHost: "
                             "127.0.0.1:8080\r\nX-Key: good\r\nContent-Length: 2\r\n\r\n{}");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, "POST /v1/events {}");
  std::lock_guard<std::mutex> lock(mu);
  ASSERT_EQ(targets.size(), 1u);
  EXPECT_EQ(targets[0], "/v1/events?x=1 /v1/events");
}

// ---- connection limits ----------------------------------------------------------------------

TEST_F(ServerTest, ConnectionsPerAddressAreCapped) {
  ServerOptions options;
  options.connections_max = 50;
  options.connections_per_address_max = 3;
  start(options);
  std::vector<std::unique_ptr<HttpClient>> held;
  for (int i = 0; i < 3; ++i) {
    held.push_back(std::make_unique<HttpClient>("127.0.0.1", server_->port()));
    held.back()->set_local_address("127.0.0.2");
    ASSERT_EQ(held.back()->request("GET", "/").status, 200);
  }
  HttpClient fourth("127.0.0.1", server_->port(), 2000);
  fourth.set_local_address("127.0.0.2");
  EXPECT_EQ(fourth.request("GET", "/").status, 0) << "over its address's share";
  HttpClient other("127.0.0.1", server_->port());
  other.set_local_address("127.0.0.3");
  EXPECT_EQ(other.request("GET", "/").status, 200) << "another address has its own share";
  EXPECT_EQ(server_->stats().refused_per_address, 1u);

  // A closed connection gives its slot back.
  held[0]->close();
  int status = 0;
  for (int i = 0; i < 100 && status != 200; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    HttpClient again("127.0.0.1", server_->port(), 2000);
    again.set_local_address("127.0.0.2");
    status = again.request("GET", "/").status;
  }
  EXPECT_EQ(status, 200);
}

TEST_F(ServerTest, IdleConnectionsMakeRoomForNewClients) {
  ServerOptions options;
  options.connections_max = 50;
  options.connections_per_address_max = 20;
  start(options);
  // One address opens more than its share of idle kept-alive connections, a second one fills
  // the rest: without the reserve, a third client would be shut out for the idle timeout.
  std::vector<std::unique_ptr<HttpClient>> idle;
  int refused = 0;
  auto open_idle = [&](const char* address, int n) {
    for (int i = 0; i < n; ++i) {
      auto c = std::make_unique<HttpClient>("127.0.0.1", server_->port(), 2000);
      c->set_local_address(address);
      const int status = c->request("GET", "/").status;
      if (status == 200) {
        idle.push_back(std::move(c));
      } else {
        ++refused;
      }
    }
  };
  open_idle("127.0.0.2", 30);
  EXPECT_EQ(refused, 10) << "the first address gets its share, 20";
  open_idle("127.0.0.3", 20);
  open_idle("127.0.0.4", 20);
  EXPECT_EQ(refused, 10) << "new clients got in: idle connections were closed for them";
  HttpClient late("127.0.0.1", server_->port(), 2000);
  late.set_local_address("127.0.0.5");
  EXPECT_EQ(late.request("GET", "/").status, 200);
  const ServerStats stats = server_->stats();
  EXPECT_GT(stats.idle_evicted, 0u);
  EXPECT_LE(stats.connections_live, 50u);
  EXPECT_EQ(stats.refused_connections_max, 0u);
}

TEST_F(ServerTest, HalfAHeadIsClosedAfterTheHeaderDeadline) {
  ServerOptions options;
  options.header_timeout_ms = 200;
  options.idle_timeout_ms = 60000;
  start(options);
  HttpClient slow("127.0.0.1", server_->port());
  ASSERT_EQ(slow.send_raw("GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "), "");
  auto begin = std::chrono::steady_clock::now();
  EXPECT_TRUE(slow.wait_closed_by_peer(5000));
  EXPECT_LT(std::chrono::steady_clock::now() - begin, std::chrono::milliseconds(3000))
      << "the header deadline, not the idle timeout";

  HttpClient silent("127.0.0.1", server_->port());
  ASSERT_EQ(silent.send_raw(""), "");  // connects, sends nothing
  EXPECT_TRUE(silent.wait_closed_by_peer(5000));
  // Counted when the server's read completes, which may be just after the client saw the close.
  for (int i = 0; i < 500 && server_->stats().header_timeouts < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_EQ(server_->stats().header_timeouts, 2u);

  // Between requests a kept-alive connection waits the idle timeout, not the header deadline.
  HttpClient kept("127.0.0.1", server_->port());
  ASSERT_EQ(kept.request("GET", "/a").status, 200);
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  EXPECT_EQ(kept.request("GET", "/b").body, "GET /b ");
  EXPECT_EQ(kept.connections_opened(), 1);
}

// ---- streamed bodies -----------------------------------------------------------------------

TEST_F(ServerTest, StreamedPiecesMayComeFromAnotherThread) {
  std::mutex mu;
  std::vector<std::thread> threads;
  start({}, [&](Request&&, Responder respond) {
    Response r;
    r.content_type = "text/plain";
    auto n = std::make_shared<int>(0);
    r.stream = [&, n](StreamReady ready) {
      const int i = (*n)++;
      std::lock_guard<std::mutex> lock(mu);
      threads.emplace_back([i, ready] {
        StreamPiece piece;
        piece.data = i == 1 ? "" : "piece" + std::to_string(i) + ";";  // an empty one too
        piece.more = i < 3;
        ready(std::move(piece));
      });
    };
    respond(std::move(r));
  });
  HttpClient c("127.0.0.1", server_->port());
  HttpResponse r = c.request("GET", "/s");
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.header("transfer-encoding"), "chunked");
  EXPECT_EQ(r.body, "piece0;piece2;piece3;");
  EXPECT_EQ(c.request("GET", "/s").body, "piece0;piece2;piece3;") << "and the connection lives on";
  EXPECT_EQ(c.connections_opened(), 1);
  std::lock_guard<std::mutex> lock(mu);
  for (auto& t : threads) {
    t.join();
  }
}

TEST_F(ServerTest, FailedOrDroppedPieceCutsTheBodyShort) {
  start({}, [&](Request&& request, Responder respond) {
    Response r;
    const bool drop = request.path == "/drop";
    auto n = std::make_shared<int>(0);
    r.stream = [drop, n](StreamReady ready) {
      if ((*n)++ == 0) {
        ready(StreamPiece{"first", true});
      } else if (!drop) {
        ready(Status::io_error("disk"));
      }  // else: `ready` is dropped without an answer
    };
    respond(std::move(r));
  });
  for (const char* path : {"/fail", "/drop"}) {
    HttpClient c("127.0.0.1", server_->port(), 3000);
    HttpResponse r = c.request("GET", path);
    EXPECT_EQ(r.status, 0) << path << ": a truncated body must not look complete: " << r.body;
  }
}

// frame_requests is what tests/fuzz/http_request_fuzz.cc drives: it must frame bytes exactly as
// a connection does. The same streams go to a real server and through frame_requests (whole,
// and a few bytes per read); the requests handed on and the server's own refusal must agree.
TEST_F(ServerTest, FrameRequestsFramesBytesAsAConnectionDoes) {
  std::mutex mu;
  std::vector<Request> seen;
  ServerOptions options;
  options.body_bytes_max = 64;
  start(options, [&](Request&& request, Responder respond) {
    Response r = echo(request);
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.push_back(std::move(request));
    }
    respond(std::move(r));
  });
  const std::string streams[] = {
      "GET /a%20b?x=1&y=+z&&e HTTP/1.1\r\nHost: h\r\nX-Two: 1\r\nx-two: 2\r\n\r\n"
      "POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc"
      "GET /last HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n",
      "POST /c HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
      "3\r\nabc\r\n0\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET /bad%zz HTTP/1.1\r\nHost: h\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: h\r\n\r\n"
      "POST /big HTTP/1.1\r\nHost: h\r\nContent-Length: 100\r\n\r\n" +
          std::string(100, 'x'),
      "GET / HTTP/1.0\r\n\r\nGET /after-close HTTP/1.0\r\n\r\n",
      "NOT HTTP\r\n\r\n",
      "GET /ok HTTP/1.1\r\nHost: h\r\n\r\nGET /no-host HTTP/1.1\r\n\r\n",
      "POST /gz HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
  };
  for (const std::string& stream : streams) {
    {
      std::lock_guard<std::mutex> lock(mu);
      seen.clear();
    }
    HttpClient c("127.0.0.1", server_->port(), 3000);
    ASSERT_EQ(c.send_raw(stream), "");
    int last_status = 0;
    for (int i = 0; i < 10; ++i) {
      HttpResponse r = c.read_response();
      if (r.status == 0) {
        break;  // closed by the server
      }
      last_status = r.status;
    }
    std::vector<Request> served;
    {
      std::lock_guard<std::mutex> lock(mu);
      served = seen;
    }
    for (std::size_t read_bytes : {std::size_t{4096}, std::size_t{3}}) {
      const FramedStream framed = frame_requests(stream, options, read_bytes);
      ASSERT_EQ(framed.requests.size(), served.size()) << stream;
      for (std::size_t i = 0; i < served.size(); ++i) {
        EXPECT_EQ(framed.requests[i].method, served[i].method);
        EXPECT_EQ(framed.requests[i].target, served[i].target);
        EXPECT_EQ(framed.requests[i].path, served[i].path);
        EXPECT_EQ(framed.requests[i].query, served[i].query);
        EXPECT_EQ(framed.requests[i].headers, served[i].headers);
        EXPECT_EQ(framed.requests[i].body, served[i].body);
      }
      if (framed.error_status != 0) {
        EXPECT_EQ(static_cast<int>(framed.error_status), last_status) << stream;
        EXPECT_NE(framed.error_body.find("\"error\""), std::string::npos) << framed.error_body;
      } else {
        EXPECT_EQ(last_status, served.empty() ? 0 : 200) << stream;
      }
    }
  }
}

}  // namespace
}  // namespace tally::http
