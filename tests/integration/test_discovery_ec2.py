"""
EC2 discovery against moto in server mode (``moto_server``) on loopback,
with boto3 pointed at it, through a real HTTP layer in front of moto that
answers AWS's throttling errors while told to.  The test's VPC is
127.0.0.0/16 and its subnet 127.0.1.0/24, so moto gives instances
127.0.1.x addresses, where this test runs the demo backends: no probe or
request ever leaves loopback.

Instances are launched, tagged and terminated; an Auto Scaling group is
scaled out and in; throttling is injected; wrk loads the balancer through
the scale-in and counts zero failed requests.
"""

from __future__ import annotations

import http.client
import http.server
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Processes, free_port
from tests.integration.discovery_support import (
    WRK,
    Balancer,
    Load,
    demo_backend,
    wait_for,
)
from tests.processes import spawn

boto3 = pytest.importorskip("boto3")
MOTO = shutil.which("moto_server") or str(
    Path(os.sys.executable).parent / "moto_server"
)
pytestmark = [
    pytest.mark.skipif(
        not Path(MOTO).exists(), reason="moto_server (moto[server]) is missing"
    ),
    pytest.mark.skipif(WRK is None, reason="wrk is not installed"),
]

REGION = "us-east-1"
# Credentials for moto only; no metadata service is ever asked.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}

_EC2_THROTTLED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error>'
    b"<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
    b"</Error></Errors><RequestID>throttled</RequestID></Response>"
)
_ASG_THROTTLED = (
    b'<ErrorResponse xmlns="http://autoscaling.amazonaws.com/doc/2011-01-01/">'
    b"<Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded"
    b"</Message></Error><RequestId>throttled</RequestId></ErrorResponse>"
)


class Front:
    """
    An HTTP proxy in front of moto (in this process, on loopback): passes
    every request on, or, while C{throttling}, answers as AWS does when it
    throttles (EC2: 503 RequestLimitExceeded; Auto Scaling: 400 Throttling).
    """

    def __init__(self, upstream: int) -> None:
        front = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                front.requests += 1
                if front.throttling:
                    front.throttled += 1
                    asg = "/autoscaling/" in self.headers.get("Authorization", "")
                    code, data = (400, _ASG_THROTTLED) if asg else (503, _EC2_THROTTLED)
                    self.send_response(code)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "host"}
                conn.request("POST", self.path, body, headers)
                answer = conn.getresponse()
                data = answer.read()
                self.send_response(answer.status)
                for key, value in answer.getheaders():
                    if key.lower() not in (
                        "content-length",
                        "connection",
                        "transfer-encoding",
                    ):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

            do_GET = do_POST

        self.throttling = False
        self.requests = 0
        self.throttled = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def aws(processes: Processes) -> Iterator[tuple[Any, Any, Front]]:
    """moto_server on loopback, the throttling front, and boto3 clients to moto."""
    os.environ.update(AWS_ENV)
    port = free_port()
    log = processes.directory / "moto.log"
    proc = spawn([MOTO, "-H", "127.0.0.1", "-p", str(port)], log)
    processes.procs.append(proc)
    wait_for("127.0.0.1", port, proc, log)
    front = Front(port)
    url = f"http://127.0.0.1:{port}"
    ec2 = boto3.client("ec2", region_name=REGION, endpoint_url=url)
    autoscaling = boto3.client("autoscaling", region_name=REGION, endpoint_url=url)
    yield ec2, autoscaling, front
    front.close()


def running(ec2: Any, **filters: str) -> dict[str, str]:
    """Running instances (with these tags): id -> private address."""
    found = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["running"]}]
        + [{"Name": f"tag:{k}", "Values": [v]} for k, v in filters.items()]
    )
    return {
        i["InstanceId"]: i["PrivateIpAddress"]
        for r in found["Reservations"]
        for i in r["Instances"]
    }


def test_auto_scaling_group_and_tags(
    processes: Processes, aws: tuple[Any, Any, Front]
) -> None:
    """
    An ASG of two found at start; scaled out to three (the new one waits
    for its first probe); throttled (the set stays, said once, then
    recovers); scaled in to one under wrk load with zero failed requests;
    and instances launched with a tag, then terminated, found and dropped
    by a tags-only section.
    """
    ec2, autoscaling, front = aws
    vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="127.0.1.0/24")["Subnet"][
        "SubnetId"
    ]
    image = ec2.describe_images()["Images"][0]["ImageId"]
    ec2.create_launch_template(
        LaunchTemplateName="app-lt",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )
    autoscaling.create_auto_scaling_group(
        AutoScalingGroupName="app-asg",
        LaunchTemplate={"LaunchTemplateName": "app-lt"},
        MinSize=0,
        MaxSize=4,
        DesiredCapacity=2,
        VPCZoneIdentifier=subnet,
        Tags=[{"Key": "role", "Value": "web", "PropagateAtLaunch": True}],
    )
    port = free_port()
    started: dict[str, Any] = {}

    def serve(instances: dict[str, str]) -> None:
        for instance, address in instances.items():
            if instance not in started:
                assert address.startswith("127.0.1."), address
                started[instance] = demo_backend(processes, instance, address, port)

    serve(running(ec2, role="web"))
    assert len(started) == 2
    lb = Balancer(
        processes,
        "[health]\ninterval = 500ms\ntimeout = 400ms\ninitial_state = unknown\n"
        f"[discovery:app]\ntype = ec2\nregion = {REGION}\nasg = app-asg\n"
        f"tags = role=web\nport = {port}\ninterval = 1s\n"
        f"endpoint_url = http://127.0.0.1:{front.port}\n"
        f"[discovery:batch]\ntype = ec2\nregion = {REGION}\ntags = role=batch\n"
        f"port_tag = port\ninterval = 1s\nempty_hold = 0\n"
        f"endpoint_url = http://127.0.0.1:{front.port}\n",
        env=AWS_ENV,
    )

    def names(source: str) -> set[str]:
        return {n for n, b in lb.backends().items() if b["source"] == source}

    def healthy(source: str) -> set[str]:
        return {
            n
            for n, b in lb.backends().items()
            if b["source"] == source and b["healthy"]
        }

    first = {f"app-{a}-{port}" for a in running(ec2, role="web").values()}
    lb.wait(lambda: healthy("ec2:app") == first, "the group's two instances")

    # Scale out: the new instance is found, probed, then takes requests.
    autoscaling.set_desired_capacity(AutoScalingGroupName="app-asg", DesiredCapacity=3)
    serve(running(ec2, role="web"))
    expected = {f"app-{a}-{port}" for a in running(ec2, role="web").values()}
    assert len(expected) == 3
    lb.wait(lambda: healthy("ec2:app") == expected, "the third instance")
    (third,) = expected - first
    assert lb.backends()[third]["history"][0]["reason"].startswith(
        "added by ec2:app (3 running instances); waiting for a probe"
    )

    # Throttling: lookups fail, the set stays, and it recovers.
    front.throttling = True
    lb.wait(lambda: lb.section("app")["state"] == "failing", "throttling")
    time.sleep(2)
    assert names("ec2:app") == expected
    assert "Throttling (throttled): Rate exceeded" in lb.section("app")["last_error"]
    front.throttling = False
    lb.wait(lambda: lb.section("app")["state"] == "ok", "recovery")
    assert front.throttled >= 2

    # Tagged instances launched, then terminated (port from their tag).
    launched = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        SubnetId=subnet,
        TagSpecifications=[
            {
                "ResourceType": "instance",
                "Tags": [
                    {"Key": "role", "Value": "batch"},
                    {"Key": "port", "Value": str(port)},
                ],
            }
        ],
    )["Instances"][0]
    address = launched["PrivateIpAddress"]
    serve({launched["InstanceId"]: address})
    batch = f"batch-{address}-{port}"
    lb.wait(lambda: healthy("ec2:batch") == {batch}, "the tagged instance")
    ec2.terminate_instances(InstanceIds=[launched["InstanceId"]])
    lb.wait(lambda: names("ec2:batch") == set(), "the terminated instance to go")

    # Scale in under load: the two leaving drain; no request fails.
    load = Load(processes.directory, lb.port)
    try:
        time.sleep(1.5)
        before = running(ec2, role="web")
        autoscaling.set_desired_capacity(
            AutoScalingGroupName="app-asg", DesiredCapacity=1
        )
        after = running(ec2, role="web")
        assert len(after) == 1
        gone = {f"app-{before[i]}-{port}" for i in before if i not in after}
        lb.wait(lambda: not gone & names("ec2:app"), "the scale-in")
        # Only now (an ASG lifecycle hook's job on AWS) do the instances stop.
        for instance in set(before) - set(after):
            started[instance].terminate()
        time.sleep(1.5)
    finally:
        counts = load.stop()
    assert counts["requests"] > 300, counts
    assert counts["socket_errors"] == 0, counts
    assert counts["non_2xx"] == 0, counts
    assert names("ec2:app") == {f"app-{a}-{port}" for a in after.values()}
    for name in gone:
        assert not any(
            name in line and "still" in line for line in lb.text().splitlines()
        )
    text = lb.text()
    assert text.count("discovery ec2:app: lookup of running instances") == 1, text
    assert text.count("discovery ec2:app: running instances with") >= 1
