"""Parameters of the ``inspector`` node: names, defaults, ranges, and what they build.

One table (``PARAMETERS``) declares every parameter with a descriptor, so ``ros2 param
describe`` shows its meaning and range and rcl refuses an out-of-range value; choices are
checked at declaration and on every later change. Read-only parameters configure the
model and are read in ``on_configure``; the others may change while the node runs: the
threshold, the overlay weight and the CameraInfo tolerance take effect on the next image,
the image QoS at the next activation, the output QoS at the next configuration.
"""
from dataclasses import replace

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
from rclpy.qos import (DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy,
                       qos_profile_sensor_data)

from igspad_ros.core.features import DEFAULT_EXTRACTOR, EXTRACTOR_NAMES
from igspad_ros.core.inspector import InspectorConfig
from igspad_ros.core.matching import DEFAULT_MATCHER, MATCHER_NAMES
from igspad_ros.data.image_encoding import MAX_SIDE
from igspad_ros.ros.flow import QUEUE_MODES

_DEFAULT = InspectorConfig()
RELIABILITIES = ('best_effort', 'reliable')
CAMERA_INFO_MODES = ('auto', 'required')
TF_QOS = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=100,     # tf2_ros's broadcaster
                    reliability=ReliabilityPolicy.RELIABLE,
                    durability=DurabilityPolicy.VOLATILE)
# name: (default, description, (low, high) range or tuple of choices or None, read_only)
PARAMETERS = {
    'scene_path': ('', 'scene PLY; its retrieval index and threshold lie beside it', None, True),
    'device': ('auto', 'auto | cpu | cuda', ('auto', 'cpu', 'cuda'), True),
    'extractor': (DEFAULT_EXTRACTOR, 'feature extractor for scoring (eq. 5)', EXTRACTOR_NAMES,
                  True),
    'extractor_weights': ('', 'weights file of the extractor; empty = its default place',
                          None, True),
    'matcher': (DEFAULT_MATCHER, 'matcher for retrieval and MPS', MATCHER_NAMES, True),
    'igs_steps': (_DEFAULT.igs.steps, 'IGS steps (paper: 300; the lr decay keeps its share '
                  'of the run)',
                  (1, 10000), True),
    'igs_lr': (_DEFAULT.igs.lr, 'IGS initial learning rate, decayed tenfold (paper: 0.01)',
               (1e-6, 1.0), True),
    'mps': (True, 'Matching Points Sampling weights the IGS loss (paper 3.2.3)', None, True),
    'pnp': (_DEFAULT.igs.pnp, 'correct the retrieved start by PnP on rendered depth before '
            'IGS', None, True),
    'mps_radius': (0.0, 'MPS radius k in px; 0 = 8 % of the long image side', (0.0, 1000.0), True),
    'igs_working_size': (0, 'long side of the IGS renders; 0 = the training size of the '
                         'scene (at most the input size; else >= 16)',
                         (0, MAX_SIDE), True),
    'retrieval_shortlist': (_DEFAULT.shortlist, 'training views matched with LightGlue for '
                            'the initial pose (cheapest-scored first); 0 = all', (0, 100000),
                            True),
    'roi': ('scene', 'inspection region: scene (the box stored with it), none (whole image) '
            'or xmin,ymin,zmin,xmax,ymax,zmax in the scene frame', None, True),
    'photometric': (True, 'colour-match the render to the image before scoring (exposure, '
                    'white balance)', None, True),
    'threshold': (0.0, 'image-score threshold; 0 = the one calibrated with the scene',
                  (0.0, 1e6), False),
    'queue_mode': ('latest', 'latest: drop frames that arrive while busy; all: queue them',
                   QUEUE_MODES, True),
    'queue_size': (100, 'frames kept waiting in queue_mode all', (1, 10000), True),
    'compressed': (False, 'subscribe to image/compressed (PNG/JPEG) instead of image',
                   None, True),
    'max_image_side': (MAX_SIDE, 'larger input images are rejected', (16, MAX_SIDE), True),
    'diagnostics_period': (1.0, 'seconds between /diagnostics health reports',
                           (0.05, 60.0), True),
    'overlay_alpha': (0.5, 'weight of the heatmap in ~/overlay', (0.0, 1.0), False),
    'autostart': (True, 'configure and activate at start; false: wait for lifecycle '
                  'transitions (a lifecycle manager, the launch file, ros2 lifecycle set)',
                  None, True),
    'camera_info_mode': ('auto', 'auto: images need the CameraInfo of their stamp once any '
                         'CameraInfo arrived; required: from the first image',
                         CAMERA_INFO_MODES, True),
    'camera_info_tolerance': (0.0, 'seconds an image stamp may differ from its CameraInfo '
                              'stamp; 0 = the exact stamp', (0.0, 1.0), False),
    'image_qos_reliability': ('best_effort', 'image and camera_info subscriptions (SensorData '
                              'by default); applied at activation', RELIABILITIES, False),
    'image_qos_depth': (0, 'image subscription depth; 0 = SensorData 5, or queue_size in '
                        'queue_mode all; applied at activation', (0, 10000), False),
    'output_qos_reliability': ('reliable', 'outputs and /diagnostics; applied at '
                               'configuration', RELIABILITIES, False),
    'output_qos_depth': (10, 'output depth; applied at configuration', (1, 10000), False),
    'tf_frame_name': ('inspected_object', 'child frame of the object on /tf, parent the '
                      'image frame_id (needs tf2_msgs); empty = no TF', None, True),
}


def declare(node, name):
    """Declare one parameter of the table on ``node``; return its value.

    Raises ValueError naming the parameter for a value outside its choices (rcl itself
    refuses one outside its range, as rclpy.exceptions.ParameterException).
    """
    default, description, limits, read_only = PARAMETERS[name]
    descriptor = ParameterDescriptor(name=name, description=description, read_only=read_only)
    if isinstance(limits, tuple) and isinstance(limits[0], str):
        descriptor.additional_constraints = f'one of: {", ".join(limits)}'
    elif isinstance(limits, tuple) and isinstance(default, int):
        descriptor.integer_range = [IntegerRange(from_value=limits[0], to_value=limits[1])]
    elif isinstance(limits, tuple):
        descriptor.floating_point_range = [
            FloatingPointRange(from_value=limits[0], to_value=limits[1])]
    value = node.declare_parameter(name, default, descriptor).value
    reason = choice_error(name, value)
    if reason:
        raise ValueError(reason)
    return value


def choice_error(name, value):
    """Return why ``value`` is not one of the parameter's choices, or '' when it is."""
    limits = PARAMETERS[name][2] if name in PARAMETERS else None
    if isinstance(limits, tuple) and isinstance(limits[0], str) and value not in limits:
        return f'{name}: {value!r} is not one of {", ".join(limits)}'
    return ''


def qos(reliability, depth):
    """Keep-last volatile QoSProfile of a reliability name ('best_effort'|'reliable')."""
    policy = (ReliabilityPolicy.RELIABLE if reliability == 'reliable'
              else ReliabilityPolicy.BEST_EFFORT)
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=policy,
                      durability=DurabilityPolicy.VOLATILE)


def image_qos(reliability, depth, queue_size):
    """Return the image subscription's QoS; depth 0: SensorData's 5, or a burst in all mode."""
    return qos(reliability, depth or max(qos_profile_sensor_data.depth, queue_size))


def inspector_config(p):
    """InspectorConfig from the node's parameters, on the Inspector's defaults.

    As offline/evaluate.py: the lr decay keeps the default's share of the steps (two thirds,
    as the paper's 200 of 300; ``IGSConfig.with_steps``), also with ``pnp``; a changed lr
    scales the final lr with it. Zeros keep the defaults.
    """
    base = _DEFAULT.igs
    steps, lr = p['igs_steps'], p['igs_lr']
    igs = replace(base.with_steps(steps), mps=p['mps'], pnp=p['pnp'],
                  mps_radius=p['mps_radius'] or base.mps_radius,
                  working_size=p['igs_working_size'] or base.working_size)
    if lr != base.lr:
        igs = replace(igs, lr=lr, lr_final=base.lr_final * lr / base.lr)
    # an override threshold also spares the Inspector calibrating a missing one at load
    return replace(_DEFAULT, extractor=p['extractor'], matcher=p['matcher'], igs=igs,
                   shortlist=p['retrieval_shortlist'],
                   extractor_weights=p['extractor_weights'] or None,
                   threshold=p['threshold'] or None, roi=p['roi'], photometric=p['photometric'])
