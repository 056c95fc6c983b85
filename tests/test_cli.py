"""The command line: the data check runs, and bad input gives one clear line."""

import os

import pytest

from conftest import assert_one_error_line, run_script


def _train(*args, env=None):
  return run_script('train.py', *args, env=env)


def test_inspect_data_prints_a_summary_and_writes_previews(tmp_path):
  result = _train(f'--workdir={tmp_path / "w"}', '--inspect_data')
  assert result.returncode == 0, result.stderr
  assert 'Stage cas' in result.stdout and 'Stage fas' in result.stdout
  assert 'images/s' in result.stdout
  assert os.path.exists(tmp_path / 'w' / 'data_preview_cas.png')


@pytest.mark.parametrize('case', ['missing_root', 'corrupt_image',
                                  'empty_sources', 'workdir_is_file'])
def test_bad_input_is_one_line_and_nonzero_exit(tmp_path, mvtec_tree, case):
  root, _ = mvtec_tree
  args = [f'--workdir={tmp_path / "w"}', '--inspect_data',
          f'--config.data.root={root}', '--config.data.category=widget']
  expected = root
  if case == 'missing_root':
    args[2] = f'--config.data.root={tmp_path / "no such dir"}'
    expected = str(tmp_path / 'no such dir')
  elif case == 'corrupt_image':
    expected = os.path.join(root, 'widget', 'train', 'good', '005.png')
    with open(expected, 'wb') as f:
      f.write(b'\x89PNG\r\n\x1a\nbroken')
  elif case == 'empty_sources':
    (tmp_path / 'textures').mkdir()
    expected = str(tmp_path / 'textures')
    args.append(f'--config.anomaly.source={expected}')
  elif case == 'workdir_is_file':
    (tmp_path / 'w').write_text('')
    expected = str(tmp_path / 'w')
  result = _train(*args)
  assert_one_error_line(result, expected)
  assert not (tmp_path / 'w' / 'data_preview_cas.png').exists()


@pytest.mark.parametrize('args,expected', [
    (['--config.train.no_such_field=1'], "unknown config field 'no_such_field'"),
    (['--config.data.image_size=30'], 'config.data.image_size'),
    (['--config.data.image_size=abc'], 'config.data.image_size'),
    (['--config=configs/missing.py'], 'cannot load the config file'),
])
def test_bad_flags_are_one_line(tmp_path, args, expected):
  result = _train(f'--workdir={tmp_path / "w"}', *args)
  assert_one_error_line(result, expected)
  assert not (tmp_path / 'w').exists()


def test_batch_not_divisible_by_devices_is_one_line(tmp_path):
  env = dict(os.environ, XLA_FLAGS=os.environ['XLA_FLAGS'] +
             ' --xla_force_host_platform_device_count=4')
  result = _train(f'--workdir={tmp_path / "w"}', '--config.train.batch_size=6',
                  env=env)
  assert result.returncode == 2
  assert 'error: config.train.batch_size: 6 is not divisible by the 4 devices' in result.stderr
  assert not (tmp_path / 'w').exists()
