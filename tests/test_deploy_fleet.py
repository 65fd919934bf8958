"""
aws/txlb-fleet.yaml, the fleet behind an NLB, checked by the tools that
consume it: cfn-lint, a deployment into moto (security groups, listeners,
target groups and their health checks, the Auto Scaling groups, the
balancers' role), ``cloud-init schema`` on every instance's user data as
deployed, shellcheck on aws/bootstrap-fleet.sh, and txlb's own parser on the
lb.ini it writes.  No AWS account is reached.
"""

from __future__ import annotations

import ast
import base64
import json
import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from tests.test_deploy_artifacts import SSH_CIDR, rules, tool
from txlb.config import parse

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = REPO / "aws" / "txlb-fleet.yaml"
BOOTSTRAP = REPO / "aws" / "bootstrap-fleet.sh"
SITE = REPO / "nginx" / "txlb-fleet.conf"
VPC = "10.43.0.0/16"
REGION = "eu-west-1"


def template() -> dict[str, Any]:
    decode = pytest.importorskip(
        "cfnlint.decode.cfn_yaml", reason="pip install .[test]"
    )
    return decode.loads(TEMPLATE.read_text())  # type: ignore[no-any-return]


def test_cfn_lint_clean() -> None:
    """cfn-lint reports nothing, not even a warning or an informational note."""
    result = subprocess.run(
        [tool("cfn-lint"), "--info", str(TEMPLATE)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "", result.stdout


def test_what_moto_does_not_check() -> None:
    """
    Read from the template (moto's instances ignore security groups): each
    launch template's group, Redis's, and no key pair on Redis; the nginx
    site believes PROXY headers from the template's VPC only.
    """
    resources = template()["Resources"]
    groups = {
        "BalancerTemplate": "BalancerSecurityGroup",
        "BackendTemplate": "BackendSecurityGroup",
    }
    for name, group in groups.items():
        data = resources[name]["Properties"]["LaunchTemplateData"]
        assert data["SecurityGroupIds"] == [{"Ref": group}], name
    redis = resources["Redis"]["Properties"]
    assert redis["SecurityGroupIds"] == [{"Ref": "RedisSecurityGroup"}]
    assert "KeyName" not in redis  # no way in but 6379 from the balancers
    assert resources["Vpc"]["Properties"]["CidrBlock"] == VPC
    site = SITE.read_text()
    assert re.findall(r"set_real_ip_from (\S+);", site) == [VPC, VPC]
    assert site.count("real_ip_header proxy_protocol;") == 2
    assert len(re.findall(r"listen \S+ .*proxy_protocol", site)) == 3


def _apply_what_cloudformation_applies(env: pytest.MonkeyPatch) -> None:
    """
    moto's CloudFormation drops a load balancer's Type and attributes and a
    target group's attributes (it makes an application load balancer, which
    then refuses TCP listeners).  Give them to moto's own ELBv2 backend, as
    CloudFormation gives them to ELBv2, so moto checks them as its API does
    and the test reads them back from the API.
    """
    from moto.elbv2 import models

    def load_balancer(
        cls: Any, name: str, cfn: dict[str, Any], account: str, region: str, **_: Any
    ) -> Any:
        properties = cfn["Properties"]
        backend = models.elbv2_backends[account][region]
        balancer = backend.create_load_balancer(
            name,
            properties.get("SecurityGroups"),
            properties.get("Subnets"),
            scheme=properties.get("Scheme", "internet-facing"),
            loadbalancer_type=properties.get("Type"),
        )
        attributes = properties.get("LoadBalancerAttributes", [])
        backend.modify_load_balancer_attributes(
            balancer.arn, {a["Key"]: a["Value"] for a in attributes}
        )
        return balancer

    made = models.FakeTargetGroup.create_from_cloudformation_json.__func__  # type: ignore[attr-defined]

    def target_group(
        cls: Any, name: str, cfn: dict[str, Any], account: str, region: str, **kw: Any
    ) -> Any:
        group = made(cls, name, cfn, account, region, **kw)
        attributes = cfn["Properties"].get("TargetGroupAttributes", [])
        models.elbv2_backends[account][region].modify_target_group_attributes(
            group.arn, {a["Key"]: a["Value"] for a in attributes}
        )
        return group

    env.setattr(
        models.FakeLoadBalancer,
        "create_from_cloudformation_json",
        classmethod(load_balancer),
    )
    env.setattr(
        models.FakeTargetGroup,
        "create_from_cloudformation_json",
        classmethod(target_group),
    )


class Deployment:
    def __init__(self, balancers: int, backends: int) -> None:
        boto3 = pytest.importorskip("boto3", reason="pip install .[test]")
        ec2 = boto3.client("ec2", region_name=REGION)
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        ssm = boto3.client("ssm", region_name=REGION)
        ssm.put_parameter(Name="/txlb-test/ami", Value=ami, Type="String")
        default = "Default: /aws/service/debian/release/12/latest/amd64"
        body = TEMPLATE.read_text()
        assert body.count(default) == 1
        body = body.replace(default, "Default: /txlb-test/ami")
        cf = boto3.client("cloudformation", region_name=REGION)
        cf.create_stack(
            StackName="fleet",
            TemplateBody=body,
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[
                {"ParameterKey": "SshCidr", "ParameterValue": SSH_CIDR},
                {
                    "ParameterKey": "TxlbRepository",
                    "ParameterValue": "https://git.example/txlb.git",
                },
                {"ParameterKey": "TxlbRef", "ParameterValue": "v2.0"},
                {"ParameterKey": "BalancerCount", "ParameterValue": str(balancers)},
                {"ParameterKey": "BackendCount", "ParameterValue": str(backends)},
            ],
        )
        stack = cf.describe_stacks(StackName="fleet")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        self.physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cf.list_stack_resources(StackName="fleet")[
                "StackResourceSummaries"
            ]
        }
        self.groups = {
            g["GroupId"]: g
            for g in ec2.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [self.physical["Vpc"]]}]
            )["SecurityGroups"]
        }
        elb = boto3.client("elbv2", region_name=REGION)
        lb_arn = self.physical["LoadBalancer"]
        (self.lb,) = elb.describe_load_balancers(LoadBalancerArns=[lb_arn])[
            "LoadBalancers"
        ]
        self.listeners = elb.describe_listeners(LoadBalancerArn=lb_arn)["Listeners"]
        self.lb_attributes = {
            a["Key"]: a["Value"]
            for a in elb.describe_load_balancer_attributes(LoadBalancerArn=lb_arn)[
                "Attributes"
            ]
        }
        self.tg_attributes = {
            name: {
                a["Key"]: str(a["Value"])
                for a in elb.describe_target_group_attributes(
                    TargetGroupArn=self.physical[name]
                )["Attributes"]
            }
            for name in ("HttpTargets", "HttpsTargets")
        }
        self.target_groups = {
            tg["TargetGroupArn"]: tg
            for tg in elb.describe_target_groups()["TargetGroups"]
        }
        autoscaling = boto3.client("autoscaling", region_name=REGION)
        self.asgs = {
            g["AutoScalingGroupName"]: g
            for g in autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
        }
        self.instances = {
            i["InstanceId"]: i
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        self.templates = {
            name: base64.b64decode(
                ec2.describe_launch_template_versions(
                    LaunchTemplateId=self.physical[name]
                )["LaunchTemplateVersions"][0]["LaunchTemplateData"]["UserData"]
            ).decode()
            for name in ("BalancerTemplate", "BackendTemplate")
        }
        redis = self.instances[self.physical["Redis"]]
        self.redis_ip = redis["PrivateIpAddress"]
        self.redis_user_data = base64.b64decode(
            ec2.describe_instance_attribute(
                InstanceId=redis["InstanceId"], Attribute="userData"
            )["UserData"]["Value"]
        ).decode()
        iam = boto3.client("iam", region_name=REGION)
        role = self.physical["BalancerRole"]
        (policy,) = iam.list_role_policies(RoleName=role)["PolicyNames"]
        document = iam.get_role_policy(RoleName=role, PolicyName=policy)[
            "PolicyDocument"
        ]
        self.policy = _policy(document)


def _policy(document: Any) -> dict[str, Any]:
    """
    A role policy as read back: boto3 parses the API's URL-encoded JSON;
    moto's CloudFormation keeps the template's policy as Python's text of
    the mapping, which is read as such.
    """
    if not isinstance(document, str):
        return document  # type: ignore[no-any-return]
    text = unquote(document)
    try:
        return json.loads(text)  # type: ignore[no-any-return]
    except json.JSONDecodeError:
        return ast.literal_eval(text)  # type: ignore[no-any-return]


@pytest.fixture(scope="module", params=[(1, 1), (3, 4)], ids=["1+1", "3+4"])
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The template deployed into moto: balancers + backends."""
    moto = pytest.importorskip("moto", reason="pip install .[test]")
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(key, "testing")
        for key in ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.delenv(key, raising=False)
        env.setenv("AWS_DEFAULT_REGION", REGION)
        _apply_what_cloudformation_applies(env)
        with moto.mock_aws():
            deployment = Deployment(*request.param)
            deployment.counts = request.param  # type: ignore[attr-defined]
            yield deployment


def test_security_groups(deployed: Deployment) -> None:
    """
    Deployed: nothing is open to the world but SSH from SshCidr; the
    balancers take 80, 443 and 8081 from the VPC (the NLB's nodes) only, the
    backends their port from the balancers only, Redis 6379 from the
    balancers only and nothing else.
    """
    d = deployed
    group = {name: d.groups[d.physical[name]] for name in (
        "BalancerSecurityGroup", "BackendSecurityGroup", "RedisSecurityGroup"
    )}  # fmt: skip
    balancers = group["BalancerSecurityGroup"]["GroupId"]
    assert rules(group["BalancerSecurityGroup"]) == {
        ("tcp", 80, 80, VPC),
        ("tcp", 443, 443, VPC),
        ("tcp", 8081, 8081, VPC),
        ("tcp", 22, 22, SSH_CIDR),
    }
    assert rules(group["BackendSecurityGroup"]) == {
        ("tcp", 9001, 9001, balancers),
        ("tcp", 22, 22, SSH_CIDR),
    }
    assert rules(group["RedisSecurityGroup"]) == {("tcp", 6379, 6379, balancers)}
    for g in d.groups.values():
        for protocol, _, _, source in rules(g):
            assert protocol != "-1", g["GroupName"]
            assert source not in ("0.0.0.0/0", "::/0"), g["GroupName"]


def test_load_balancer(deployed: Deployment) -> None:
    """
    A network load balancer, cross-zone, in both zones: TCP 80 and 443
    forward to their own target group of TCP targets with PROXY protocol
    v2 and without the client's address in the packets, each checked with
    HTTP GET /healthz on nginx's health port, twice 5 s apart.
    """
    d = deployed
    assert (d.lb["Type"], d.lb["Scheme"]) == ("network", "internet-facing")
    assert d.lb_attributes["load_balancing.cross_zone.enabled"] == "true"
    assert {z["SubnetId"] for z in d.lb["AvailabilityZones"]} == {
        d.physical["SubnetA"],
        d.physical["SubnetB"],
    }
    forwards = {
        (listener["Protocol"], listener["Port"]): listener["DefaultActions"]
        for listener in d.listeners
    }
    assert set(forwards) == {("TCP", 80), ("TCP", 443)}
    for port, name in ((80, "HttpTargets"), (443, "HttpsTargets")):
        (action,) = forwards[("TCP", port)]
        assert action["Type"] == "forward"
        assert action["TargetGroupArn"] == d.physical[name]
        tg = d.target_groups[d.physical[name]]
        assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == (
            "TCP",
            port,
            "instance",
        )
        assert tg["VpcId"] == d.physical["Vpc"]
        assert (tg["HealthCheckProtocol"], tg["HealthCheckPort"]) == ("HTTP", "8081")
        assert tg["HealthCheckPath"] == "/healthz"
        assert tg["HealthCheckIntervalSeconds"] == 5
        assert (tg["HealthyThresholdCount"], tg["UnhealthyThresholdCount"]) == (2, 2)
        assert tg["Matcher"] == {"HttpCode": "200"}
        # The client's address travels in the PROXY header, not the packets.
        attributes = d.tg_attributes[name]
        assert attributes["proxy_protocol_v2.enabled"] == "true", attributes
        assert attributes["preserve_client_ip.enabled"] == "false", attributes
        assert attributes["deregistration_delay.timeout_seconds"] == "30", attributes
    assert d.outputs["DashboardURL"] == f"https://{d.lb['DNSName']}/dashboard/"


def test_auto_scaling_groups(deployed: Deployment) -> None:
    """
    BalancerCount balancers in a group registered with both target groups
    and replaced when the NLB finds them not ready; BackendCount backends in
    a group of their own, which the balancers' user data names; the role
    lets the balancers list instances and groups, nothing more.
    """
    d = deployed
    balancers, backends = d.counts  # type: ignore[attr-defined]
    group = d.asgs[d.physical["BalancerGroup"]]
    assert group["DesiredCapacity"] == balancers
    assert len(group["Instances"]) == balancers
    assert sorted(group["TargetGroupARNs"]) == sorted(
        [d.physical["HttpTargets"], d.physical["HttpsTargets"]]
    )
    assert group["HealthCheckType"] == "ELB"
    assert set(group["VPCZoneIdentifier"].split(",")) == {
        d.physical["SubnetA"],
        d.physical["SubnetB"],
    }
    web = d.asgs[d.physical["BackendGroup"]]
    assert web["DesiredCapacity"] == backends
    assert len(web["Instances"]) == backends
    assert d.outputs["BackendGroupName"] == d.physical["BackendGroup"]
    (statement,) = d.policy["Statement"]
    assert sorted(statement["Action"]) == [
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:DescribeInstances",
    ]
    line = re.search(
        r"bootstrap-fleet\.sh, balancer, \"([^\"]+)\", \"([^\"]+)\", \"([^\"]+)\","
        r" \"(\d+)\"\]",
        d.templates["BalancerTemplate"],
    )
    assert line, d.templates["BalancerTemplate"]
    assert line.groups() == (d.redis_ip, REGION, d.physical["BackendGroup"], "9001")
    assert d.outputs["RedisAddress"] == f"redis://{d.redis_ip}:6379/0"
    for text in d.templates.values():
        assert '--branch, "v2.0", "https://git.example/txlb.git"' in text


def test_user_data_passes_cloud_init_schema(
    deployed: Deployment, tmp_path: Path
) -> None:
    """The balancers', backends' and Redis's user data, as deployed, is valid."""
    cloud_init = tool("cloud-init")
    texts = [*deployed.templates.values(), deployed.redis_user_data]
    for n, text in enumerate(texts):
        path = tmp_path / f"user-data-{n}.yaml"
        path.write_text(text)
        result = subprocess.run(
            [cloud_init, "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid cloud-config" in result.stdout
    assert "include /etc/redis/txlb.conf" in deployed.redis_user_data
    assert "bind 0.0.0.0" in deployed.redis_user_data


def test_bootstrap_shellcheck() -> None:
    """aws/bootstrap-fleet.sh is clean under shellcheck."""
    result = subprocess.run(
        [tool("shellcheck"), str(BOOTSTRAP)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def fleet_lb_ini() -> str:
    return subprocess.run(
        ["bash", str(BOOTSTRAP), "lb-ini", "10.43.1.9", REGION, "fleet-web", "9001"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_lb_ini() -> None:
    """
    The balancer's lb.ini: txlb behind nginx on loopback, its stats port
    where nginx sends /healthz, the fleet through the template's Redis, the
    backends found with issue 13's [discovery:app] type = ec2 keys, and a
    grace that outlasts the NLB's two failed checks, grace and drain within
    systemd's stop timeout.
    """
    config = parse(fleet_lb_ini(), "lb.ini")
    (app,) = config.discoveries
    assert (app.name, app.common.type, app.common.port) == ("app", "ec2", 9001)
    assert app.ec2 is not None
    assert (app.ec2.region, app.ec2.asg, app.ec2.interval) == (REGION, "fleet-web", 15)
    assert config.backends == ()
    assert config.listen == ("tcp:8080:interface=127.0.0.1",)
    assert config.stats_listen == "tcp:9000:interface=127.0.0.1"
    site = SITE.read_text()
    assert "server 127.0.0.1:8080;" in site and "server 127.0.0.1:9000;" in site
    assert [str(n) for n in config.proxy.trusted_proxies] == ["127.0.0.1/32"]
    assert str(config.fleet.redis) == "redis://10.43.1.9:6379/0"
    assert config.fleet.node == ""  # the instance's host name
    assert config.fleet.interval == 0.1
    # workers = auto: the supervisor is the node and tells its workers.
    assert config.workers == len(os.sched_getaffinity(0))
    checks = template()["Resources"]["HttpTargets"]["Properties"]
    detection = checks["HealthCheckIntervalSeconds"] * checks["UnhealthyThresholdCount"]
    assert config.shutdown_grace > detection
    service = (REPO / "systemd" / "txlb.service").read_text()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", service, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert config.shutdown_grace + config.shutdown_timeout < stop
    bad = subprocess.run(
        ["bash", str(BOOTSTRAP), "lb-ini", "redis.example", REGION, "g", "9001"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0


def test_bootstrap_installs_files_that_exist() -> None:
    """Every file of this checkout that bootstrap-fleet.sh installs is here."""
    paths = re.findall(r"\"\$SRC/([^\"]+)\"", BOOTSTRAP.read_text())
    assert "nginx/txlb-fleet.conf" in paths and "systemd/txlb.service" in paths
    for path in paths:
        assert (REPO / path).exists(), path
