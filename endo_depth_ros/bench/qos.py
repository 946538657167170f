"""``endo-depth-bench qos``: how many camera frames reach the node, by size and QoS.

For each image size x publisher reliability x subscription QoS x middleware setting, a
publisher process sends ``--frames`` rgb8 images at ``--rate`` Hz and a receiver process
counts what arrives with the subscription QoS (``node``: reliable, keep last 10,
:func:`endo_depth_ros.ros.qos.input_qos`, every frame taken: what reaches the node's
process; the node itself takes only the newest, ``ros/input_gate``, and counts the
others as dropped). Both are separate processes, as a camera
driver and the node are, so the middleware takes its inter-process path (UDP or shared
memory), and each pair gets a fresh middleware set-up.

Middleware settings (Fast DDS, the default rmw of the ROS 2 wheels):

- ``default``: nothing configured;
- ``shm``: an XML profile (``FASTDDS_DEFAULT_PROFILES_FILE``) with only the shared-memory
  transport, its segment sized for ``--shm-frames`` frames (discovery also runs over
  shared memory: nothing leaves the machine);
- ``udp-buffers``: an XML profile with the UDPv4 transport on 127.0.0.1 only and 4 MB
  socket buffers (the kernel's ``net.core.rmem_max`` / ``wmem_max`` cap them).

Delivery = frames received / frames sent after both ends matched (and a short pause,
so discovery has completed on both sides). The table lists sent, received, delivery and
the payload rate actually received.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
import random
import tempfile

from endo_depth_ros.bench import add_sizes_argument, parse_sizes, print_table
from endo_depth_ros.errors import ConfigError, EndoDepthError
from endo_depth_ros.ros.process import NodeProcess

#: The two ends, each run as ``python -m PROBE send|receive ...``.
PROBE = 'endo_depth_ros.ros.qos_probe'
RELIABILITIES = ('best_effort', 'reliable')
SUBSCRIPTIONS = ('node', 'best_effort', 'reliable')
MIDDLEWARES = ('default', 'shm', 'udp-buffers')

_SHM_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>endo_depth_shm</transport_id>
        <type>SHM</type>
        <segment_size>{segment}</segment_size>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="endo_depth_shm_only" is_default_profile="true">
      <rtps>
        <useBuiltinTransports>false</useBuiltinTransports>
        <userTransports><transport_id>endo_depth_shm</transport_id></userTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""

_UDP_PROFILE = """<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>endo_depth_udp_loopback</transport_id>
        <type>UDPv4</type>
        <sendBufferSize>{buffer}</sendBufferSize>
        <receiveBufferSize>{buffer}</receiveBufferSize>
        <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="endo_depth_udp_loopback" is_default_profile="true">
      <rtps>
        <useBuiltinTransports>false</useBuiltinTransports>
        <userTransports><transport_id>endo_depth_udp_loopback</transport_id></userTransports>
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the QoS benchmark."""
    add_sizes_argument(parser, '640x512,1280x720,1920x1080')
    parser.add_argument('--frames', type=int, default=60,
                        help='frames sent per combination (default: %(default)s)')
    parser.add_argument('--rate', type=float, default=30.0,
                        help='publishing rate, Hz (default: %(default)s)')
    parser.add_argument('--publishers', default=','.join(RELIABILITIES),
                        help='publisher reliabilities (default: %(default)s)')
    parser.add_argument('--subscriptions', default='node',
                        help=f'subscription QoS, from {",".join(SUBSCRIPTIONS)}, with an '
                             'optional @DEPTH (reliable@10; default: %(default)s)')
    parser.add_argument('--middleware', default='default',
                        help=f'middleware settings, from {",".join(MIDDLEWARES)} '
                             '(default: %(default)s)')
    parser.add_argument('--shm-frames', type=int, default=4,
                        help='frames the shared-memory segment holds (default: %(default)s)')


def _choices(text: str, allowed: tuple[str, ...], option: str) -> list[str]:
    items = [t.strip() for t in text.split(',') if t.strip()]
    bad = [t for t in items if t.partition('@')[0] not in allowed
           or not (t.partition('@')[2] or '1').isdigit()]
    if bad or not items:
        raise ConfigError(f'{option}: expected some of {", ".join(allowed)}, got {text!r}.')
    return items


def run(args: argparse.Namespace) -> None:
    """Measure every combination and print one table."""
    sizes = parse_sizes(args.sizes, min_side=2)
    if not 1 <= args.frames <= 10_000 or not 0.1 <= args.rate <= 1000:
        raise ConfigError(f'--frames must be in 1..10000 and --rate in 0.1..1000 Hz, got '
                          f'{args.frames}, {args.rate}.')
    publishers = _choices(args.publishers, RELIABILITIES, '--publishers')
    subscriptions = _choices(args.subscriptions, SUBSCRIPTIONS, '--subscriptions')
    middlewares = _choices(args.middleware, MIDDLEWARES, '--middleware')
    # Both ends are processes of this machine: keep DDS on loopback, in a private domain.
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('ROS_LOCALHOST_ONLY', '1')
    domain = os.environ.get('ROS_DOMAIN_ID') or str(random.SystemRandom().randint(1, 200))
    rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix='endo_depth_qos_') as tmp:
        for width, height in sizes:
            for middleware in middlewares:
                env = {'ROS_DOMAIN_ID': domain,
                       **middleware_env(middleware, width * height * 3, args.shm_frames, Path(tmp))}
                for publisher in publishers:
                    for subscription in subscriptions:
                        sent, received, matched = _measure(
                            width, height, publisher, subscription, args, env)
                        rows.append({
                            'size': f'{width}x{height}', 'middleware': middleware,
                            'publisher': publisher,
                            'subscription': _describe_subscription(subscription),
                            'sent': sent, 'received': received,
                            'delivered': (f'{100 * received / max(sent, 1):.0f}%' if matched
                                          else 'no match (incompatible QoS)'),
                            'MB/s received': received * width * height * 3 * args.rate
                            / max(sent, 1) / 1e6,
                        })
    print_table(f'frames delivered, rgb8 at {args.rate:g} Hz, {args.frames} frames per row '
                '(publisher and receiver in separate processes)', rows)


def _describe_subscription(name: str) -> str:
    from endo_depth_ros.ros import qos  # rclpy: only once measuring
    if name != 'node':
        reliability, _, depth = name.partition('@')
        return f'{reliability}, keep_last {depth or qos.INPUT_DEPTH}'
    return f'node input ({qos.describe(qos.input_qos())})'


def middleware_env(name: str, frame_bytes: int, shm_frames: int,
                   tmp: Path) -> dict[str, str]:
    """Environment of both processes for middleware setting ``name`` (see the module),
    its XML profile written under ``tmp``."""
    if name == 'default':
        return {}
    path = tmp / f'{name}_{frame_bytes}.xml'
    if name == 'shm':
        # Room for a few frames plus headers; Fast DDS refuses segments it cannot map.
        segment = max(frame_bytes * shm_frames + (1 << 20), 1 << 20)
        path.write_text(_SHM_PROFILE.format(segment=segment))
    else:
        path.write_text(_UDP_PROFILE.format(buffer=4 * 1024 * 1024))
    return {'FASTDDS_DEFAULT_PROFILES_FILE': str(path), 'RMW_FASTRTPS_USE_QOS_FROM_XML': '0'}


def _measure(width: int, height: int, publisher: str, subscription: str,
             args: argparse.Namespace, env: dict[str, str]) -> tuple[int, int, bool]:
    timeout = args.frames / args.rate + 60.0  # matching, settling and grace included
    receiver = NodeProcess(['-m', PROBE, 'receive', subscription], env,
                           name='the receiver')
    try:
        sender = NodeProcess(['-m', PROBE, 'send', publisher, str(width), str(height),
                              str(args.frames), str(args.rate)], env, name='the sender')
        try:
            code = sender.wait(timeout)
            if code != 0:
                raise EndoDepthError(f'the sender exited with {code}: {sender.last_log_line()}')
            report = json.loads(sender.stdout.strip().splitlines()[-1])
        finally:
            sender.close()
        receiver.check_alive()
        receiver.stop()
        lines = receiver.stdout.strip().splitlines()
        if not lines:
            raise EndoDepthError(f'the receiver printed nothing: {receiver.last_log_line()}')
        received = json.loads(lines[-1])['received']
    finally:
        receiver.close()
    return int(report['sent']), int(received), bool(report.get('matched', True))
