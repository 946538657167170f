"""Test-session set-up shared by every test.

DDS traffic must never leave the machine: discovery is limited to localhost (Jazzy and
newer read ROS_AUTOMATIC_DISCOVERY_RANGE, Humble reads ROS_LOCALHOST_ONLY), and each
session picks its own random domain id so that parallel runs never see each other. This
runs at import time, before any test module imports rclpy, and child processes inherit it.
"""

from __future__ import annotations

import os
import random

os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ['ROS_LOCALHOST_ONLY'] = '1'
# A domain id set by the caller (./dev picks a random one) is kept, so that parallel runs
# can be given distinct domains; otherwise pick one at random.
if not os.environ.get('ROS_DOMAIN_ID', '').isdigit():
    os.environ['ROS_DOMAIN_ID'] = str(random.SystemRandom().randint(1, 200))
# Never reach for a model hub: every model in the tests is built from local files.
os.environ['HF_HUB_OFFLINE'] = '1'
os.environ['TRANSFORMERS_OFFLINE'] = '1'
