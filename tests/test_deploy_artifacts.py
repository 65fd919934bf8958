"""
The deployment files checked by the tools that consume them: the systemd
units by ``systemd-analyze`` (and socket activation for real, through
``systemd-socket-activate``), the CloudFormation template by ``cfn-lint`` and
by deploying it into moto, the instances' user data by ``cloud-init schema``,
and ``aws/bootstrap.sh`` by shellcheck and by parsing the lb.ini it writes.
"""

from __future__ import annotations

import ast
import base64
import http.client
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.processes import spawn, stop_all, wait_for_port
from txlb.config import parse

REPO = Path(__file__).resolve().parents[1]
SYSTEMD = REPO / "systemd"
TEMPLATE = REPO / "aws" / "txlb.yaml"
BOOTSTRAP = REPO / "aws" / "bootstrap.sh"
BIN = Path(sys.executable).parent
UNITS = ["txlb.service", "txlb.socket", "txlb-backend@9001.service"]


def tool(name: str) -> str:
    path = shutil.which(name) or str(BIN / name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{name} is not installed: run scripts/install-system-deps.sh")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unit_settings(name: str) -> dict[str, list[str]]:
    """Every Key=value of a unit file, in order, comments dropped."""
    settings: dict[str, list[str]] = {}
    for line in (SYSTEMD / name).read_text().splitlines():
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


# --- systemd -------------------------------------------------------------------------


@pytest.fixture
def unit_root(tmp_path: Path) -> Path:
    """
    A root directory for ``systemd-analyze --root``: the units installed as
    the docs say, stand-ins for the virtualenv's programs, and the system's
    own units (sysinit.target and friends) that ours depend on.
    """
    root = tmp_path / "root"
    units = root / "etc" / "systemd" / "system"
    units.mkdir(parents=True)
    for path in SYSTEMD.iterdir():
        shutil.copy(path, units / path.name)
    bin_dir = root / "opt" / "txlb" / "bin"
    bin_dir.mkdir(parents=True)
    for program in ("twistd", "txlb-demo-backend"):
        (bin_dir / program).write_text("#!/bin/sh\n")
        (bin_dir / program).chmod(0o755)
    # ExecReload's kill.
    (root / "bin").mkdir()
    (root / "bin" / "kill").write_text("#!/bin/sh\n")
    (root / "bin" / "kill").chmod(0o755)
    system = Path("/usr/lib/systemd/system")
    if not system.is_dir():
        system = Path("/lib/systemd/system")
    shutil.copytree(system, root / "usr" / "lib" / "systemd" / "system", symlinks=True)
    return root


def verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("systemd-analyze"), "verify", "--man=no", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_units_verify(unit_root: Path) -> None:
    """systemd-analyze verify finds nothing at all to say about the units."""
    result = verify(unit_root, *UNITS)
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""


def test_verify_would_catch_a_mistake(unit_root: Path) -> None:
    """
    The check above is not vacuous: a misspelt key, a bad boolean or a
    missing program each make systemd-analyze speak.
    """
    unit = unit_root / "etc" / "systemd" / "system" / "txlb.service"
    good = unit.read_text()
    for broken in (
        good.replace("NoNewPrivileges=yes", "NoNewPrivilege=yes"),
        good.replace("ProtectHome=yes", "ProtectHome=maybe"),
        good.replace("/opt/txlb/bin/twistd", "/opt/txlb/bin/twistd-missing"),
    ):
        unit.write_text(broken)
        result = verify(unit_root, "txlb.service")
        assert result.stdout + result.stderr != "", broken


def _json_log_drop_in() -> str:
    """The drop-in txlb.service's comment gives for JSON logs, uncommented."""
    lines = (SYSTEMD / "txlb.service").read_text().splitlines()
    start = lines.index("#   [Service]")
    drop_in = []
    for line in lines[start:]:
        if not line.startswith("#   "):
            break
        drop_in.append(line.removeprefix("#   "))
    return "\n".join(drop_in) + "\n"


def test_json_log_drop_in(unit_root: Path) -> None:
    """
    The JSON-log drop-in in txlb.service's comment is a valid drop-in that
    replaces ExecStart with the same command plus twistd's --logger naming
    txlb's JSON observer (which exists under that name).
    """
    from twisted.python.reflect import namedAny

    from txlb.observe import jsonlog

    drop_in = _json_log_drop_in()
    directory = unit_root / "etc" / "systemd" / "system" / "txlb.service.d"
    directory.mkdir()
    (directory / "json-log.conf").write_text(drop_in)
    result = verify(unit_root, "txlb.service")
    assert result.returncode == 0, result.stderr
    assert result.stdout + result.stderr == ""
    exec_start = [
        v
        for k, _, v in (ln.partition("=") for ln in drop_in.splitlines())
        if k == "ExecStart"
    ]
    assert exec_start[0] == ""  # clears the unit's own
    [original] = unit_settings("txlb.service")["ExecStart"]
    logger = "--logger=txlb.observe.jsonlog.observer"
    assert exec_start[1] == original.replace(" txlb ", f" {logger} txlb ")
    assert namedAny(logger.partition("=")[2]) is jsonlog.observer


def test_units_security_exposure(unit_root: Path) -> None:
    """systemd-analyze security rates both services at most 2.0 ("OK")."""
    for unit in ("txlb.service", "txlb-backend@9001.service"):
        result = subprocess.run(
            [
                *(tool("systemd-analyze"), "security", "--offline=yes"),
                *(f"--root={unit_root}", "--threshold=20", "--no-pager", unit),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", result.stdout)
        assert match and float(match.group(1)) <= 2.0, result.stdout[-500:]


def test_service_runs_txlb_as_documented() -> None:
    """
    txlb.service runs the documented command line as a transient user with
    the hardening the deployment promises.
    """
    service = unit_settings("txlb.service")
    assert service["ExecStart"] == [
        "/opt/txlb/bin/twistd -n --pidfile= txlb --config /etc/txlb/lb.ini"
    ]
    for key, value in {
        "Restart": "on-failure",
        "DynamicUser": "yes",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "CapabilityBoundingSet": "",
        "AmbientCapabilities": "",
        # workers = N: the supervisor alone gets SIGTERM, and drains them.
        "KillMode": "mixed",
        "RuntimeDirectory": "txlb",
    }.items():
        assert service[key] == [value], key
    backend = unit_settings("txlb-backend@.service")
    assert backend["ExecStart"][0].startswith("/opt/txlb/bin/txlb-demo-backend ")
    assert "--port %i" in backend["ExecStart"][0]
    assert backend["DynamicUser"] == ["yes"]
    socket_unit = unit_settings("txlb.socket")
    assert socket_unit["ListenStream"] == ["127.0.0.1:8080"]
    assert socket_unit["FileDescriptorName"] == ["http"]


class _Procs:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: Path, **kw: Any) -> subprocess.Popen[bytes]:
        proc = spawn(argv, log, **kw)
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        stop_all(self.procs)


@pytest.fixture
def procs() -> Iterator[_Procs]:
    p = _Procs()
    yield p
    p.stop()


@pytest.mark.parametrize("listen", ["index=0", "name=http"])
def test_socket_activation(listen: str, tmp_path: Path, procs: _Procs) -> None:
    """
    With the socket held by a socket activator, as txlb.socket does (one
    socket, named http), ``listen = systemd:domain=INET:...`` adopts it and
    the balancer answers on it.
    """
    activate = tool("systemd-socket-activate")
    backend_port = free_port()
    log = tmp_path / "backend.log"
    argv = [sys.executable, "-m", "backends", "--name", "web1"]
    backend = procs.start([*argv, "--port", str(backend_port)], log)
    wait_for_port(backend_port, backend, log)
    ini = tmp_path / "lb.ini"
    ini.write_text(
        f"[txlb]\nlisten = systemd:domain=INET:{listen}\n"
        f"[backend:web1]\naddress = 127.0.0.1:{backend_port}\n"
    )
    port = free_port()
    log = tmp_path / "txlb.log"
    txlb = [str(BIN / "twistd"), "-n", "--pidfile=", "txlb", "--config", str(ini)]
    activator = procs.start(
        [activate, "--fdname=http", "-l", f"127.0.0.1:{port}", *txlb], log
    )
    # The activator listens at once; txlb starts on the first connection.
    wait_for_port(port, activator, log)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=15)
    conn.request("GET", "/via-socket")
    response = conn.getresponse()
    response.read()
    assert response.status == 200, log.read_text()
    conn.close()
    assert "Execing" in log.read_text()


def test_systemd_endpoint_without_a_socket(tmp_path: Path) -> None:
    """
    Started without socket activation, a systemd: listener is refused with
    one line that says what to do, not a traceback.
    """
    ini = tmp_path / "lb.ini"
    ini.write_text(
        "[txlb]\nlisten = systemd:domain=INET:index=0\n"
        "[backend:a]\naddress = 127.0.0.1:9\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    result = subprocess.run(
        [str(BIN / "twistd"), "txlb", "--config", str(ini), "--check"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert "[txlb] listen" in result.stderr
    assert "systemd passed no such socket" in result.stderr
    assert "txlb.socket" in result.stderr


# --- AWS -----------------------------------------------------------------------------


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


def load_template() -> dict[str, Any]:
    decode = pytest.importorskip(
        "cfnlint.decode.cfn_yaml", reason="pip install .[test]"
    )
    return decode.loads(TEMPLATE.read_text())  # type: ignore[no-any-return]


def test_instances_use_the_right_groups() -> None:
    """
    The balancer is in the balancer's group and every backend (the Auto
    Scaling group's launch template) in the backends' group (read from the
    template: moto ignores SecurityGroupIds).
    """
    resources = load_template()["Resources"]
    instances = {
        name: r["Properties"]
        for name, r in resources.items()
        if r["Type"] == "AWS::EC2::Instance"
    }
    assert set(instances) == {"Balancer"}
    balancer = instances["Balancer"]
    assert balancer["SecurityGroupIds"] == [{"Ref": "BalancerSecurityGroup"}]
    assert balancer["SubnetId"] == {"Ref": "Subnet"}
    backends = resources["BackendLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    assert backends["SecurityGroupIds"] == [{"Ref": "BackendSecurityGroup"}]
    group = resources["BackendGroup"]["Properties"]
    assert group["VPCZoneIdentifier"] == [{"Ref": "Subnet"}]
    assert group["LaunchTemplate"]["LaunchTemplateId"] == {
        "Ref": "BackendLaunchTemplate"
    }
    groups = [
        r for r in resources.values() if r["Type"].startswith("AWS::EC2::Security")
    ]
    assert len(groups) == 2  # no separate ingress resources that could add ports


SSH_CIDR = "203.0.113.7/32"


class Deployment:
    def __init__(self, backend_count: int) -> None:
        self.backend_count = backend_count
        boto3 = pytest.importorskip("boto3", reason="pip install .[test]")
        ec2 = boto3.client("ec2", region_name="eu-west-1")
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        ssm = boto3.client("ssm", region_name="eu-west-1")
        # moto resolves the parameter type, but may not hold /aws/service/...
        # names, and looks the default up even when it is overridden.
        ssm.put_parameter(Name="/txlb-test/ami", Value=ami, Type="String")
        default = "Default: /aws/service/debian/release/12/latest/amd64"
        body = TEMPLATE.read_text()
        assert body.count(default) == 1
        body = body.replace(default, "Default: /txlb-test/ami")
        cf = boto3.client("cloudformation", region_name="eu-west-1")
        cf.create_stack(
            StackName="txlb",
            TemplateBody=body,
            Capabilities=["CAPABILITY_IAM"],
            Parameters=[
                {"ParameterKey": "SshCidr", "ParameterValue": SSH_CIDR},
                {
                    "ParameterKey": "TxlbRepository",
                    "ParameterValue": "https://git.example/txlb.git",
                },
                {"ParameterKey": "TxlbRef", "ParameterValue": "v1.2"},
                {"ParameterKey": "BackendCount", "ParameterValue": str(backend_count)},
            ],
        )
        stack = cf.describe_stacks(StackName="txlb")["Stacks"][0]
        assert stack["StackStatus"] == "CREATE_COMPLETE", stack
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack["Outputs"]}
        self.physical = {
            r["LogicalResourceId"]: r["PhysicalResourceId"]
            for r in cf.list_stack_resources(StackName="txlb")["StackResourceSummaries"]
        }
        vpc = self.physical["Vpc"]
        self.groups = {
            g["GroupId"]: g
            for g in ec2.describe_security_groups(
                Filters=[{"Name": "vpc-id", "Values": [vpc]}]
            )["SecurityGroups"]
        }
        self.instances = {
            i["InstanceId"]: i
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        self.user_data = {
            instance: base64.b64decode(
                ec2.describe_instance_attribute(
                    InstanceId=instance, Attribute="userData"
                )["UserData"]["Value"]
            ).decode()
            for instance in self.instances
        }
        self.addresses = ec2.describe_addresses()["Addresses"]
        autoscaling = boto3.client("autoscaling", region_name="eu-west-1")
        (self.group,) = autoscaling.describe_auto_scaling_groups()["AutoScalingGroups"]
        iam = boto3.client("iam")
        role = self.physical["BalancerRole"]
        self.role = iam.get_role(RoleName=role)["Role"]
        self.trust = _document(self.role["AssumeRolePolicyDocument"])
        self.role_policies = {
            name: _document(
                iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
            )
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        }
        self.attached = iam.list_attached_role_policies(RoleName=role)[
            "AttachedPolicies"
        ]
        self.profile = iam.get_instance_profile(
            InstanceProfileName=self.physical["BalancerProfile"]
        )["InstanceProfile"]
        # What the balancer's txlb finds, asked as it asks (boto3, in moto).
        from tests.discovery.doubles import now_run
        from txlb.discovery.config import EC2Config
        from txlb.discovery.ec2 import Boto3Client, EC2Source

        source = EC2Source(
            EC2Config(region="eu-west-1", asg=self.group["AutoScalingGroupName"]),
            9001,
            Boto3Client("eu-west-1", ""),
            now_run,
        )
        found = source.lookup()
        self.found: list[str] = []
        found.addCallback(lambda a: self.found.extend(str(f.address) for f in a.found))


def _document(value: Any) -> Any:
    """
    An IAM policy document as boto3 gives it: parsed, or text (JSON as AWS
    sends it; moto's CloudFormation stores an inline policy as a Python
    literal).
    """
    if not isinstance(value, str):
        return value
    text = urllib.parse.unquote(value)
    try:
        return json.loads(text)
    except ValueError:
        return ast.literal_eval(text)


@pytest.fixture(scope="module", params=[1, 3, 4], ids=lambda n: f"{n}-backends")
def deployed(request: pytest.FixtureRequest) -> Iterator[Deployment]:
    """The template deployed into moto with 1, 3 and 4 backends."""
    moto = pytest.importorskip("moto", reason="pip install .[test]")
    with pytest.MonkeyPatch.context() as env:
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            env.setenv(key, "testing")
        for key in ("AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
            env.delenv(key, raising=False)
        env.setenv("AWS_DEFAULT_REGION", "eu-west-1")
        with moto.mock_aws():
            yield Deployment(request.param)


def rules(group: dict[str, Any]) -> set[tuple[str, int, int, str]]:
    """(protocol, from, to, source) for every ingress rule of a group."""
    out = set()
    for p in group["IpPermissions"]:
        sources = [r["CidrIp"] for r in p["IpRanges"]]
        sources += [r["CidrIpv6"] for r in p["Ipv6Ranges"]]
        sources += [g["GroupId"] for g in p["UserIdGroupPairs"]]
        sources += [pl["PrefixListId"] for pl in p["PrefixListIds"]]
        for source in sources:
            out.add(
                (p["IpProtocol"], p.get("FromPort", -1), p.get("ToPort", -1), source)
            )
    return out


def test_deployed_security_groups(deployed: Deployment) -> None:
    """
    Deployed into moto: only 80 and 443 are open to the world (on the
    balancer), nothing opens 8080, the backends' port is open only to the
    balancer's group, SSH only to SshCidr.
    """
    d = deployed
    balancer = d.groups[d.physical["BalancerSecurityGroup"]]
    backends = d.groups[d.physical["BackendSecurityGroup"]]
    assert rules(balancer) == {
        ("tcp", 80, 80, "0.0.0.0/0"),
        ("tcp", 443, 443, "0.0.0.0/0"),
        ("tcp", 22, 22, SSH_CIDR),
    }
    assert rules(backends) == {
        ("tcp", 9001, 9001, balancer["GroupId"]),
        ("tcp", 22, 22, SSH_CIDR),
    }
    for group in d.groups.values():
        for protocol, low, high, source in rules(group):
            assert protocol != "-1", group["GroupName"]
            assert not low <= 8080 <= high, group["GroupName"]
            if source in ("0.0.0.0/0", "::/0"):
                assert (low, high) in ((80, 80), (443, 443)), group["GroupName"]


def test_deployed_instances_and_outputs(deployed: Deployment) -> None:
    """
    N backends and one balancer are created; the balancer's user data names
    exactly the backends' private addresses; the dashboard URL is the
    balancer's public address over HTTPS.
    """
    d = deployed
    backend_count = d.backend_count
    names = {
        i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]}["Name"]
        for i in d.instances.values()
    }
    backend_ids = [i for i, name in names.items() if name == "txlb-web"]
    assert len(backend_ids) == backend_count
    assert sorted(names.values()) == ["txlb-balancer"] + ["txlb-web"] * backend_count
    (balancer_id,) = [i for i, name in names.items() if name == "txlb-balancer"]
    group = d.group
    assert group["DesiredCapacity"] == backend_count
    assert sorted(i["InstanceId"] for i in group["Instances"]) == sorted(backend_ids)
    assert d.outputs["BackendGroup"] == group["AutoScalingGroupName"]
    # The balancer is told the group, not addresses: it finds them.
    line = re.search(
        r"bootstrap\.sh, balancer-asg, \"([^\"]*)\"", d.user_data[balancer_id]
    )
    assert line, d.user_data[balancer_id]
    assert line.group(1).split() == ["eu-west-1", group["AutoScalingGroupName"], "9001"]
    wanted = sorted(f"{d.instances[i]['PrivateIpAddress']}:9001" for i in backend_ids)
    assert sorted(d.found) == wanted
    (address,) = d.addresses
    assert address["InstanceId"] == balancer_id
    assert d.outputs["DashboardURL"] == f"https://{address['PublicIp']}/dashboard/"
    for instance, text in d.user_data.items():
        assert text.startswith("#cloud-config\n")
        assert '--branch, "v1.2", "https://git.example/txlb.git"' in text, instance


def test_user_data_passes_cloud_init_schema(
    deployed: Deployment, tmp_path: Path
) -> None:
    """The user data of every instance, as deployed, is valid cloud-config."""
    cloud_init = tool("cloud-init")
    d = deployed
    roles = set()
    for n, text in enumerate(d.user_data.values()):
        roles.add(text.splitlines()[1])
        path = tmp_path / f"user-data-{n}.yaml"
        path.write_text(text)
        result = subprocess.run(
            [cloud_init, "schema", "--config-file", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Valid cloud-config" in result.stdout, result.stdout
    assert len(d.user_data) == 1 + d.backend_count
    assert len(roles) == 2  # the balancer, and the backends' launch template
    bad = tmp_path / "bad.yaml"
    bad.write_text("#cloud-config\npackages: nginx\nruncmd: {a: 1}\n")
    result = subprocess.run(
        [cloud_init, "schema", "--config-file", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0  # the check can fail


def test_deployed_balancer_role(deployed: Deployment) -> None:
    """
    The balancer's instance role may call ec2:DescribeInstances and
    autoscaling:DescribeAutoScalingGroups, nothing else; only EC2 may
    assume it; the balancer runs with it.
    """
    d = deployed
    assert d.attached == []
    (policy,) = d.role_policies.values()
    (statement,) = policy["Statement"]
    assert statement["Effect"] == "Allow"
    assert sorted(statement["Action"]) == [
        "autoscaling:DescribeAutoScalingGroups",
        "ec2:DescribeInstances",
    ]
    assert statement["Resource"] == "*"  # neither action takes resource ARNs
    assert set(statement) == {"Effect", "Action", "Resource"}
    (trust,) = d.trust["Statement"]
    assert trust["Principal"] == {"Service": "ec2.amazonaws.com"}
    assert trust["Action"] == "sts:AssumeRole"
    assert [r["RoleName"] for r in d.profile["Roles"]] == [d.role["RoleName"]]
    balancer = next(
        i for i in d.instances.values() if i.get("IamInstanceProfile") is not None
    )
    assert balancer["IamInstanceProfile"]["Arn"] == d.profile["Arn"]
    backends = [i for i in d.instances.values() if i is not balancer]
    assert all(i.get("IamInstanceProfile") is None for i in backends)


def test_scale_in_waits_for_the_drain() -> None:
    """
    An instance scaled in is held (Terminating:Wait) long enough for txlb
    to see it leave and drain it (read from the template: moto has no
    lifecycle hooks).
    """
    group = load_template()["Resources"]["BackendGroup"]["Properties"]
    (hook,) = group["LifecycleHookSpecificationList"]
    assert hook["LifecycleTransition"] == "autoscaling:EC2_INSTANCE_TERMINATING"
    assert hook["DefaultResult"] == "CONTINUE"
    interval = parse(
        subprocess.run(
            ["bash", str(BOOTSTRAP), "lb-ini-asg", "eu-west-1 g 9001"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    ).discoveries[0]
    assert interval.ec2 is not None
    assert hook["HeartbeatTimeout"] >= 10 * interval.ec2.interval


def test_bootstrap_lb_ini_asg() -> None:
    """
    The lb.ini of the balancer-asg mode: valid, one ec2 discovery section
    over the group in the region, on the backends' port, asking only what
    the role allows; new backends wait for a probe and start slowly.
    """
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), "lb-ini-asg", "eu-west-1 txlb-BackendGroup-X 9001"],
        capture_output=True,
        text=True,
        check=True,
    )
    config = parse(result.stdout, "lb.ini")
    assert config.backends == ()
    (web,) = config.discoveries
    assert web.ec2 is not None
    assert (web.type, web.ec2.region, web.ec2.asg) == (
        "ec2",
        "eu-west-1",
        "txlb-BackendGroup-X",
    )
    assert (web.common.port, web.ec2.tags, web.ec2.endpoint_url) == (9001, (), "")
    assert config.health.initial_state == "unknown"
    assert config.listen == ("tcp:8080:interface=127.0.0.1",)
    for bad in ("eu-west-1 only", "a b 1 extra"):
        wrong = subprocess.run(
            ["bash", str(BOOTSTRAP), "lb-ini-asg", bad], capture_output=True, text=True
        )
        assert wrong.returncode != 0, bad


def test_bootstrap_shellcheck() -> None:
    """aws/bootstrap.sh is clean under shellcheck."""
    result = subprocess.run(
        [tool("shellcheck"), str(BOOTSTRAP)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout


def test_bootstrap_lb_ini() -> None:
    """
    The lb.ini the balancer gets is valid, lists every backend, listens
    where nginx proxies to, and trusts only nginx on the same machine.
    """
    result = subprocess.run(
        ["bash", str(BOOTSTRAP), "lb-ini", "10.42.1.4:9001 10.42.1.5:9001  "],
        capture_output=True,
        text=True,
        check=True,
    )
    config = parse(result.stdout, "lb.ini")
    assert [(b.name, str(b.address)) for b in config.backends] == [
        ("web1", "10.42.1.4:9001"),
        ("web2", "10.42.1.5:9001"),
    ]
    assert config.listen == ("tcp:8080:interface=127.0.0.1",)
    # One worker per CPU (auto); the unit lets the supervisor drain them.
    assert config.workers == len(os.sched_getaffinity(0))
    assert "KillMode=mixed" in (REPO / "systemd" / "txlb.service").read_text()
    assert "server 127.0.0.1:8080;" in (REPO / "nginx" / "txlb.conf").read_text()
    assert [str(n) for n in config.proxy.trusted_proxies] == ["127.0.0.1/32"]
    empty = subprocess.run(
        ["bash", str(BOOTSTRAP), "lb-ini", " "], capture_output=True, text=True
    )
    assert empty.returncode != 0


def test_bootstrap_installs_files_that_exist() -> None:
    """Every file of this checkout that bootstrap.sh installs is really here."""
    text = BOOTSTRAP.read_text()
    paths = re.findall(r"\"\$SRC/([^\"]+)\"", text)
    assert "systemd/txlb.service" in paths and "nginx/txlb.conf" in paths
    for path in paths:
        assert (REPO / path).exists(), path
